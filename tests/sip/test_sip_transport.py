"""The asyncio transport on real loopback sockets, against SIPp and raw sockets.

A tiny harness built from :class:`SipTransport`, :class:`Registrar`, :class:`SdpSession` and
the dialog helpers plays Baton's part: it answers OPTIONS, runs REGISTER through the
registrar, answers INVITEs (180, then 200 with an SDP answer) and BYEs, handles CANCEL, and
can place a call itself. SIPp (Debian ``sip-tester``) plays the phones. Tests wait on events
and on process exits, always with a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from _rigs.sip import free_port, wait_listening
from baton.switch.sip.dialog import (
    Answered,
    AnsweredAfterCancel,
    OutgoingInvite,
    Rejected,
    SendAck,
    SendRequest,
    cancel_responses,
)
from baton.switch.sip.digest import DigestAuthenticator, Password, Secret
from baton.switch.sip.message import Headers, Request, Response, make_response, new_tag
from baton.switch.sip.registrar import Registrar
from baton.switch.sip.sdp import Accepted, LocalMedia, SdpSession
from baton.switch.sip.transaction import (
    AckReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionFailed,
    TransactionKey,
    TransactionTimedOut,
)
from baton.switch.sip.transport import ListenAddress, ParseFailed, SipTransport, TransportEvent
from baton.switch.sip.uri import parse_uri

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP_TIMEOUT = 30.0  # seconds a SIPp run may take before the test fails


@pytest.fixture
def sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail(
            "sipp not found: these tests need SIPp (Debian package sip-tester); "
            "run scripts/install-system-deps.sh"
        )
    return path


async def run_sipp(sipp: str, args: list[str], cwd: Path) -> tuple[int, str]:
    """Run SIPp to completion (it must exit by itself: give -m); return (status, output)."""
    process = await asyncio.create_subprocess_exec(
        sipp, *args, "-nostdin", "-trace_err", "-timeout", f"{int(SIPP_TIMEOUT - 5)}s",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd,
    )  # fmt: skip
    try:
        async with asyncio.timeout(SIPP_TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()  # only the process this test started
        await process.wait()
        pytest.fail(f"sipp {' '.join(args)} did not finish within {SIPP_TIMEOUT} s")
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace") + error_logs(cwd)


def error_logs(cwd: Path) -> str:
    """SIPp's -trace_err files: shown when a run fails."""
    return "".join(p.read_text(errors="replace") for p in cwd.glob("*_errors.log"))


class Baton:
    """The harness: Baton's SIP layer with just enough TU behaviour for these tests."""

    USERS: ClassVar[dict[str, Secret]] = {
        "alice": Password("alice-secret"),
        "bob": Password("bob-secret"),
    }

    def __init__(self, listen: list[str]) -> None:
        self.transport = SipTransport(listen, self.on_event)
        self.registrar = Registrar(
            authenticator=DigestAuthenticator("baton", b"test-secret"), lookup=self.USERS.get
        )
        self.events: list[TransportEvent] = []
        self.changed = asyncio.Event()
        self.answer_invites = True
        self.pending_invites: dict[TransactionKey, Request] = {}
        self.calls: dict[str, OutgoingInvite] = {}
        self.cancel_on_ringing = False
        self.outcomes: list[object] = []

    async def __aenter__(self) -> Baton:
        await self.transport.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.close()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait_for(self, predicate: Callable[[], bool], seconds: float = 10.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def count(self, kind: type, method: str | None = None) -> int:
        """How many events of ``kind`` (for ``method``, if given) the TU has seen."""
        total = 0
        for event in self.events:
            request = getattr(event, "request", None)
            if isinstance(event, kind) and (
                method is None or (request is not None and request.method == method)
            ):
                total += 1
        return total  # fmt: skip

    # -- the TU
    def on_event(self, event: TransportEvent) -> None:
        self.events.append(event)
        self.changed.set()
        if isinstance(event, RequestReceived):
            self.on_request(event)
        elif isinstance(event, ResponseReceived | StrayResponse):
            self.on_response(event.response)
        elif isinstance(event, TransactionTimedOut | TransactionFailed):
            call = self.calls.get(event.request.call_id)
            if call is not None and event.request.method == "INVITE":
                self.outcomes += call.timed_out()

    def on_request(self, event: RequestReceived) -> None:
        request, key = event.request, event.key
        tag = new_tag()
        contact = self.transport.contact("baton", event.peer.transport)
        if request.method == "OPTIONS":
            self.transport.send_response(key, make_response(request, 200, to_tag=tag))
        elif request.method == "REGISTER":
            self.transport.send_response(
                key, self.registrar.process(request, source=event.peer.host, now=self.now())
            )
        elif request.method == "INVITE":
            self.pending_invites[key] = request
            ringing = make_response(request, 180, to_tag=tag, headers=[("Contact", contact)])
            self.transport.send_response(key, ringing)
            if not self.answer_invites:
                return
            result = SdpSession(LocalMedia("127.0.0.1", 40000)).answer(request.body)
            assert isinstance(result, Accepted)
            ok = make_response(request, 200, to_tag=tag, body=result.answer.to_bytes(),
                               headers=[("Contact", contact), ("Content-Type", "application/sdp")])  # fmt: skip
            self.pending_invites.pop(key)
            self.transport.send_response(key, ok)
        elif request.method == "CANCEL" and event.cancels is not None:
            invite = self.pending_invites.pop(event.cancels, None)
            ok, terminated = cancel_responses(request, invite or request, tag)
            self.transport.send_response(key, ok)
            if invite is not None:
                self.transport.send_response(event.cancels, terminated)
        elif request.method == "BYE":
            self.transport.send_response(key, make_response(request, 200, to_tag=tag))
        else:
            self.transport.send_response(key, make_response(request, 501, to_tag=tag))

    # -- calling out
    def call(self, target: str, transport: str = "udp") -> OutgoingInvite:
        session = SdpSession(LocalMedia("127.0.0.1", 40002))
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:baton@127.0.0.1>;tag={new_tag()}")
        headers.add("To", f"<{target}>")
        headers.add("Call-ID", f"{new_tag()}@baton")
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self.transport.contact("baton", transport))
        headers.add("Content-Type", "application/sdp")
        invite = Request("INVITE", parse_uri(target), headers, session.offer().to_bytes())
        self.transport.send_request(invite, Peer.next_hop(invite, transport))
        call = OutgoingInvite(invite, local_contact=self.transport.contact("baton", transport))
        self.calls[invite.call_id] = call
        return call

    def on_response(self, response: Response) -> None:
        call = self.calls.get(response.call_id)
        if call is None:
            return
        outcomes: list[object] = list(call.on_response(response))
        if response.status == 180 and self.cancel_on_ringing:
            outcomes += call.cancel()
        self.act(call, outcomes)

    def act(self, call: OutgoingInvite, outcomes: Sequence[object]) -> None:
        for outcome in outcomes:
            self.outcomes.append(outcome)
            if isinstance(outcome, SendAck):
                self.transport.send_stateless(outcome.request, Peer.next_hop(outcome.request))
            elif isinstance(outcome, SendRequest):
                self.transport.send_request(outcome.request, Peer.next_hop(outcome.request))
            elif isinstance(outcome, Answered):
                bye = outcome.dialog.create_request("BYE")
                self.transport.send_request(bye, Peer.next_hop(bye))


@contextlib.asynccontextmanager
async def baton(*listen: str) -> AsyncIterator[Baton]:
    harness = Baton(list(listen) or ["udp:127.0.0.1:0"])
    async with harness:
        yield harness


def target(harness: Baton, transport: str = "udp") -> str:
    return f"127.0.0.1:{harness.transport.address(transport).port}"


# ---- SIPp against Baton -------------------------------------------------------------------


@pytest.mark.realtime
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_options_ping(sipp: str, tmp_path: Path, transport: str) -> None:
    async with baton(f"{transport}:127.0.0.1:0") as harness:
        args = [target(harness, transport), "-sf", str(SCENARIOS / "options.xml"), "-s", "baton",
                "-i", "127.0.0.1", "-p", str(free_port()), "-m", "5", "-r", "50"]  # fmt: skip
        if transport == "tcp":
            args += ["-t", "t1"]
        status, output = await run_sipp(sipp, args, tmp_path)
        assert status == 0, output
        assert harness.count(RequestReceived, "OPTIONS") == 5


@pytest.mark.realtime
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_register_with_digest(sipp: str, tmp_path: Path, transport: str) -> None:
    async with baton(f"{transport}:127.0.0.1:0") as harness:
        port = free_port()
        args = [target(harness, transport), "-sf", str(SCENARIOS / "register.xml"), "-s", "alice",
                "-au", "alice", "-ap", "alice-secret", "-i", "127.0.0.1", "-p", str(port), "-m", "1"]  # fmt: skip
        if transport == "tcp":
            args += ["-t", "t1"]
        status, output = await run_sipp(sipp, args, tmp_path)
        assert status == 0, output
        (binding,) = harness.registrar.contacts("alice", harness.now())
        # Stored exactly as SIPp sent it, upper-case transport included.
        assert (
            binding.contact_text
            == f"<sip:alice-sipp@127.0.0.1:{port};transport={transport.upper()}>"
        )
        assert Peer.for_uri(binding.uri) == Peer(transport, "127.0.0.1", port)


@pytest.mark.realtime
async def test_sipp_register_with_wrong_password(sipp: str, tmp_path: Path) -> None:
    async with baton() as harness:
        args = [target(harness), "-sf", str(SCENARIOS / "register_wrong_password.xml"), "-s",
                "alice", "-au", "alice", "-ap", "guess", "-i", "127.0.0.1", "-p", str(free_port()),
                "-m", "1"]  # fmt: skip
        status, output = await run_sipp(sipp, args, tmp_path)
        assert status == 0, output  # the scenario expects the 403
        assert harness.registrar.contacts("alice", harness.now()) == []


@pytest.mark.realtime
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_calls_in(sipp: str, tmp_path: Path, transport: str) -> None:
    async with baton(f"{transport}:127.0.0.1:0") as harness:
        args = [target(harness, transport), "-sn", "uac", "-s", "1002", "-i", "127.0.0.1",
                "-p", str(free_port()), "-m", "5", "-r", "20", "-d", "100"]  # fmt: skip
        if transport == "tcp":
            args += ["-t", "t1"]
        status, output = await run_sipp(sipp, args, tmp_path)
        assert status == 0, output
        assert harness.count(RequestReceived, "INVITE") == 5
        assert harness.count(AckReceived) == 5  # every 2xx was ACKed and matched
        assert harness.count(RequestReceived, "BYE") == 5
        assert harness.count(TransactionTimedOut) == 0


@pytest.mark.realtime
async def test_sipp_calls_in_with_packet_loss(sipp: str, tmp_path: Path) -> None:
    async with baton() as harness:
        args = [target(harness), "-sn", "uac", "-s", "1002", "-i", "127.0.0.1",
                "-p", str(free_port()), "-m", "10", "-r", "20", "-d", "100", "-lost", "10"]  # fmt: skip
        status, output = await run_sipp(sipp, args, tmp_path)
        assert status == 0, output  # SIPp's and Baton's retransmissions recovered every loss
        delivered = [(e.request.call_id, e.request.method) for e in harness.events
                     if isinstance(e, RequestReceived)]  # fmt: skip
        assert len(delivered) == len(set(delivered))  # retransmissions never reach the TU
        assert harness.count(RequestReceived, "INVITE") == 10
        # Not every BYE need arrive: when SIPp's ACK is lost, its <recv response="200"> for the
        # BYE may match Baton's retransmitted INVITE 200 instead (a SIPp scenario artifact).
        assert harness.count(RequestReceived, "BYE") <= 10


@pytest.mark.realtime
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_baton_calls_sipp(sipp: str, tmp_path: Path, transport: str) -> None:
    async with baton(f"{transport}:127.0.0.1:0") as harness:
        port = free_port()
        args = [
            "-sf",
            str(SCENARIOS / "answer_uas.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "1",
        ]
        if transport == "tcp":
            args += ["-t", "t1"]
        sipp_run = asyncio.create_task(run_sipp(sipp, args, tmp_path))
        try:
            await asyncio.sleep(0)  # let SIPp start; the INVITE is retransmitted if it is early
            await wait_listening(port, transport)
            harness.call(f"sip:bob@127.0.0.1:{port};transport={transport}", transport)
            status, output = await sipp_run
        finally:
            sipp_run.cancel()
        assert status == 0, output
        kinds = [type(o) for o in harness.outcomes]
        assert SendAck in kinds
        assert Answered in kinds


@pytest.mark.realtime
async def test_baton_cancels_a_ringing_call(sipp: str, tmp_path: Path) -> None:
    async with baton() as harness:
        harness.cancel_on_ringing = True
        port = free_port()
        args = [
            "-sf",
            str(SCENARIOS / "cancel_uas.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "1",
        ]
        sipp_run = asyncio.create_task(run_sipp(sipp, args, tmp_path))
        try:
            await wait_listening(port, "udp")
            harness.call(f"sip:bob@127.0.0.1:{port}")
            status, output = await sipp_run
        finally:
            sipp_run.cancel()
        assert status == 0, output
        rejected = [o for o in harness.outcomes if isinstance(o, Rejected)]
        assert [r.status for r in rejected] == [487]
        assert not any(isinstance(o, Answered | AnsweredAfterCancel) for o in harness.outcomes)


# ---- raw sockets ----------------------------------------------------------------------------

OPTIONS = (
    "OPTIONS sip:baton@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKraw{n};rport\r\n"
    "From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:baton@127.0.0.1>\r\n"
    "Call-ID: raw-{n}\r\nCSeq: {cseq} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


class UdpProbe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.senders: list[tuple[str, int]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.senders.append(addr)
        self.received.put_nowait(data)


@contextlib.asynccontextmanager
async def udp_probe() -> AsyncIterator[tuple[asyncio.DatagramTransport, UdpProbe]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(UdpProbe, local_addr=("127.0.0.1", 0))
    try:
        yield transport, protocol
    finally:
        transport.close()


@pytest.mark.realtime
async def test_malformed_request_is_answered_400_and_reported() -> None:
    async with baton() as harness, udp_probe() as (probe, inbox):
        port = probe.get_extra_info("sockname")[1]
        bad = OPTIONS.format(port=port, n=1, cseq="1").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")
        probe.sendto(bad.encode(), ("127.0.0.1", harness.transport.address("udp").port))
        async with asyncio.timeout(5):
            answer = await inbox.received.get()
        assert answer.startswith(b"SIP/2.0 400 CSeq method does not match the request method\r\n")
        await harness.wait_for(lambda: harness.count(ParseFailed) == 1)
        failed = next(e for e in harness.events if isinstance(e, ParseFailed))
        assert isinstance(failed, ParseFailed)
        assert failed.answered
        probe.sendto(
            b"\r\n\r\n", ("127.0.0.1", harness.transport.address("udp").port)
        )  # keep-alive
        probe.sendto(b"\x00garbage", ("127.0.0.1", harness.transport.address("udp").port))
        await harness.wait_for(lambda: harness.count(ParseFailed) == 2)


@pytest.mark.realtime
async def test_udp_response_goes_to_rport_and_retransmissions_are_absorbed() -> None:
    async with baton() as harness, udp_probe() as (probe, inbox):
        port = probe.get_extra_info("sockname")[1]
        request = OPTIONS.format(port=1, n=2, cseq="1").encode()  # a wrong sent-by port
        server = ("127.0.0.1", harness.transport.address("udp").port)
        probe.sendto(request, server)
        async with asyncio.timeout(5):
            first = await inbox.received.get()
        assert first.startswith(b"SIP/2.0 200 OK\r\n")
        assert f";rport={port};received=127.0.0.1".encode() in first
        probe.sendto(request, server)  # a retransmission: the same 200 again, no new request
        async with asyncio.timeout(5):
            assert await inbox.received.get() == first
        assert harness.count(RequestReceived) == 1


@pytest.mark.realtime
async def test_udp_burst_is_read_whole_and_an_icmp_error_stops_nothing() -> None:
    """Datagrams that wait together are read in passes of several (docs/sip.md, "Bounds and
    overload"); more than one pass's worth, and a port-unreachable error left on the socket
    by an answer to a closed port, lose none of them."""
    async with baton() as harness, udp_probe() as (probe, inbox):
        server = ("127.0.0.1", harness.transport.address("udp").port)
        gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gone.bind(("127.0.0.1", 0))
        gone_port = gone.getsockname()[1]
        gone.sendto(OPTIONS.format(port=gone_port, n=900, cseq="1").encode(), server)
        gone.close()  # Baton's 200 to it comes back as ICMP port unreachable
        await harness.wait_for(lambda: harness.count(RequestReceived) == 1)
        port = probe.get_extra_info("sockname")[1]
        for n in range(80):  # sent before Baton's loop runs again: they queue in the kernel
            probe.sendto(OPTIONS.format(port=port, n=1000 + n, cseq="1").encode(), server)
        answers = set()
        async with asyncio.timeout(10):
            while len(answers) < 80:
                answer = await inbox.received.get()
                assert answer.startswith(b"SIP/2.0 200 OK\r\n")
                answers.add(answer.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0])
        assert harness.count(RequestReceived) == 81


@pytest.mark.realtime
async def test_udp_answers_leave_from_the_socket_the_request_reached() -> None:
    async with (
        baton("udp:127.0.0.1:0", "udp:127.0.0.1:0") as harness,
        udp_probe() as (probe, inbox),
    ):
        port = probe.get_extra_info("sockname")[1]
        second = harness.transport.addresses[1].port
        probe.sendto(OPTIONS.format(port=port, n=7, cseq="1").encode(), ("127.0.0.1", second))
        async with asyncio.timeout(5):
            assert (await inbox.received.get()).startswith(b"SIP/2.0 200 OK\r\n")
        assert inbox.senders == [("127.0.0.1", second)]


@pytest.mark.realtime
async def test_tcp_framing_keepalive_and_connection_reuse() -> None:
    async with baton("tcp:127.0.0.1:0") as harness:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", harness.transport.address("tcp").port
        )
        try:
            local_port = writer.get_extra_info("sockname")[1]
            writer.write(b"\r\n\r\n")  # RFC 5626 ping
            async with asyncio.timeout(5):
                assert await reader.readexactly(2) == b"\r\n"
            two = OPTIONS.format(port=local_port, n=3, cseq="1") + OPTIONS.format(
                port=local_port, n=4, cseq="1"
            )
            two = two.replace("SIP/2.0/UDP", "SIP/2.0/TCP")
            for i in range(0, len(two), 7):  # in small pieces
                writer.write(two[i : i + 7].encode())
                await writer.drain()
            async with asyncio.timeout(5):
                for _ in range(2):
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"SIP/2.0 200 OK\r\n")
            assert harness.count(RequestReceived, "OPTIONS") == 2
            writer.write(b"INVITE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n")
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # framing lost: the connection is closed
        finally:
            writer.close()


@pytest.mark.realtime
async def test_handler_errors_do_not_stop_the_transport() -> None:
    requests: list[RequestReceived] = []
    both = asyncio.Event()

    def explode(event: TransportEvent) -> None:
        if isinstance(event, RequestReceived):
            requests.append(event)
            if len(requests) == 2:
                both.set()
        raise RuntimeError("TU bug")

    transport = SipTransport(["udp:127.0.0.1:0"], explode)
    await transport.start()
    try:
        async with udp_probe() as (probe, _):
            port = probe.get_extra_info("sockname")[1]
            for n in (5, 6):
                probe.sendto(OPTIONS.format(port=port, n=n, cseq="1").encode(),
                             ("127.0.0.1", transport.address("udp").port))  # fmt: skip
            async with asyncio.timeout(5):
                await both.wait()  # the first handler error did not stop the second delivery
    finally:
        await transport.close()


@pytest.mark.realtime
async def test_tcp_connect_failure_is_a_transaction_failure() -> None:
    async with baton("tcp:127.0.0.1:0") as harness:
        dead = free_port()  # nobody listens there
        harness.call(f"sip:nobody@127.0.0.1:{dead};transport=tcp", "tcp")
        await harness.wait_for(lambda: harness.count(TransactionFailed) == 1)
        assert [type(o) for o in harness.outcomes] == [Rejected]


# ---- virtual time ---------------------------------------------------------------------------


async def test_timers_run_on_the_loop_clock() -> None:
    """On Baton's virtual-time loop, timer B (32 s) passes in no real time."""
    loop = asyncio.get_running_loop()
    async with baton() as harness:
        start = loop.time()
        dead = free_port()
        harness.call(f"sip:nobody@127.0.0.1:{dead}")
        await harness.wait_for(lambda: harness.count(TransactionTimedOut) == 1, seconds=60)
        timed_out = next(e for e in harness.events if isinstance(e, TransactionTimedOut))
        assert isinstance(timed_out, TransactionTimedOut)
        assert loop.time() - start == pytest.approx(32.0, abs=0.5)
        assert [type(o) for o in harness.outcomes] == [Rejected]


async def test_close_stops_everything() -> None:
    harness = Baton(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"])
    await harness.transport.start()
    harness.call(f"sip:nobody@127.0.0.1:{free_port()};transport=tcp", "tcp")
    await harness.transport.close()
    assert harness.transport.addresses == []
    assert harness.transport._tasks == set()


def test_listen_addresses() -> None:
    assert ListenAddress.parse("udp:127.0.0.1:5060") == ListenAddress("udp", "127.0.0.1", 5060)
    assert ListenAddress.parse("TCP:[::1]:5062") == ListenAddress("tcp", "::1", 5062)
    assert str(ListenAddress("tcp", "::1", 5062)) == "tcp:[::1]:5062"
    for bad in ("udp:127.0.0.1", "sctp:1.2.3.4:5060", "127.0.0.1:5060", "udp::5060", "udp:h:99999"):
        with pytest.raises(ValueError, match="listen address"):
            ListenAddress.parse(bad)
    with pytest.raises(ValueError, match="at least one"):
        SipTransport([], lambda e: None)
