"""A socket-less :class:`SipTransport` and sans-IO phones, for unit tests of the ``sip`` switch in
virtual time.

:class:`FakeTransport` keeps the real transaction layer and its one timer (so retransmissions
and timeouts run on the virtual clock) but records what it would send instead of sending it;
:class:`Phone` builds requests and responses with Baton's own SIP helpers and injects them as
if they came from its address.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from baton.core.port import SwitchEvent
from baton.switch.sip import (
    DigestClient,
    Headers,
    LocalMedia,
    Peer,
    Request,
    Response,
    SdpSession,
    SipSwitch,
    TransportEvent,
    make_response,
    new_branch,
    new_tag,
    parse_message,
    parse_sip_config,
    parse_uri,
)
from baton.switch.sip.transport import ListenAddress, SipTransport


class FakeTransport(SipTransport):
    """The transport without sockets: :attr:`sent` holds every message it would have sent."""

    def __init__(self, listen: Sequence[str], on_event: Callable[[TransportEvent], None]) -> None:
        super().__init__(listen, on_event)
        self.sent: list[tuple[Request | Response, Peer]] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._bound([ListenAddress(a.transport, a.host, a.port or 5060) for a in self._listen])

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send(self, data: bytes, peer: Peer, key: object) -> None:
        self.sent.append((parse_message(data), peer))

    def inject(self, message: Request | Response, peer: Peer) -> None:
        """``message`` arrives from ``peer`` (parsed again from its bytes, as on the wire)."""
        self._received(parse_message(message.to_bytes()), peer)


@dataclass
class Fx:
    """A switch on a fake transport, with the events it emitted."""

    switch: SipSwitch
    transport: FakeTransport
    events: list[SwitchEvent] = field(default_factory=list)

    def sent_to(self, peer: Peer) -> list[Request | Response]:
        return [m for m, p in self.transport.sent if p == peer]

    def requests(self, method: str, peer: Peer | None = None) -> list[Request]:
        return [
            m
            for m, p in self.transport.sent
            if isinstance(m, Request) and m.method == method and (peer is None or p == peer)
        ]

    def responses(self, call_id: str, method: str | None = None) -> list[Response]:
        return [
            m
            for m, _ in self.transport.sent
            if isinstance(m, Response)
            and m.call_id == call_id
            and (method is None or m.cseq.method == method)
        ]

    def statuses(self, call_id: str, method: str = "INVITE") -> list[int]:
        return [r.status for r in self.responses(call_id, method)]


async def make_switch(users: Sequence[object], **sip: object) -> Fx:
    table: dict[str, object] = {"listen": ["udp:127.0.0.1:5060"], "rtp_timeout": 0}
    table.update(sip)
    holder: list[FakeTransport] = []

    def factory(listen: Sequence[str], on_event: Callable[[TransportEvent], None]) -> FakeTransport:
        t = FakeTransport(listen, on_event)
        holder.append(t)
        return t

    switch = SipSwitch(parse_sip_config(table), users, transport_factory=factory)  # type: ignore[arg-type]
    fx_events: list[SwitchEvent] = []
    switch.set_listener(fx_events.append)
    await switch.start()
    return Fx(switch, holder[0], fx_events)


_ports = itertools.count(40000, 2)


class Phone:
    """A sans-IO phone at ``127.0.0.1:port`` talking to the switch through the fake transport."""

    def __init__(self, fx: Fx, user: str, port: int, *, password: str = "secret") -> None:
        self.fx = fx
        self.user = user
        self.peer = Peer("udp", "127.0.0.1", port)
        self.password = password
        self.sdp = SdpSession(LocalMedia("127.0.0.1", next(_ports)))
        self.cseq = itertools.count(1)
        self.calls: dict[str, Request] = {}  # call-id → the last INVITE we sent

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@127.0.0.1:{self.peer.port}>"

    def _headers(self, call_id: str, method: str, to: str, from_tag: str) -> Headers:
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP 127.0.0.1:{self.peer.port};branch={new_branch()};rport")
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:{self.user}@127.0.0.1>;tag={from_tag}")
        h.add("To", to)
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{next(self.cseq)} {method}")
        h.add("Contact", self.contact)
        return h

    # -- calling in
    def invite(
        self,
        number: str,
        *,
        sdp: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        call_id: str | None = None,
        credentials_from: Response | None = None,
    ) -> Request:
        call_id = call_id or f"{new_tag()}@phone"
        previous = self.calls.get(call_id)
        from_tag = previous.from_.tag if previous is not None else new_tag()
        assert from_tag is not None
        h = self._headers(call_id, "INVITE", f"<sip:{number}@127.0.0.1>", from_tag)
        for name, value in headers:
            h.add(name, value)
        body = self.sdp.offer().to_bytes() if sdp is None else sdp
        if body:
            h.add("Content-Type", "application/sdp")
        request = Request("INVITE", parse_uri(f"sip:{number}@127.0.0.1:5060"), h, body)
        if credentials_from is not None:
            request = DigestClient(self.user, self.password).authorize(request, credentials_from)
        self.calls[call_id] = request
        self.fx.transport.inject(request, self.peer)
        return request

    def last_response(self, call_id: str, method: str = "INVITE") -> Response:
        return self.fx.responses(call_id, method)[-1]

    def ack(self, response: Response, *, body: bytes = b"") -> None:
        """ACK a 2xx (a new branch) or an error (the INVITE's branch)."""
        invite = self.calls[response.call_id]
        h = Headers()
        via = invite.headers.get("Via") if response.status >= 300 else None
        h.add("Via", via or f"SIP/2.0/UDP 127.0.0.1:{self.peer.port};branch={new_branch()};rport")
        h.add("Max-Forwards", "70")
        h.add("From", str(invite.from_))
        h.add("To", str(response.to))
        h.add("Call-ID", response.call_id)
        h.add("CSeq", f"{response.cseq.number} ACK")
        if body:
            h.add("Content-Type", "application/sdp")
        self.fx.transport.inject(Request("ACK", invite.uri, h, body), self.peer)

    def in_dialog(
        self,
        response: Response,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Request:
        """A request in the dialog a 2xx to our INVITE made (BYE, re-INVITE, INFO, …)."""
        invite = self.calls[response.call_id]
        assert invite.from_.tag is not None
        h = self._headers(response.call_id, method, str(response.to), invite.from_.tag)
        for name, value in headers:
            h.add(name, value)
        if content_type is not None:
            h.add("Content-Type", content_type)
        contacts = response.contacts
        uri = contacts[0].uri if contacts else invite.uri
        request = Request(method, uri, h, body)
        if method == "INVITE":
            self.calls[response.call_id] = request
        self.fx.transport.inject(request, self.peer)
        return request

    def cancel(self, call_id: str) -> None:
        invite = self.calls[call_id]
        h = Headers()
        h.add("Via", invite.headers.get("Via") or "")
        h.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            h.add(name, invite.headers.get(name) or "")
        h.add("CSeq", f"{invite.cseq.number} CANCEL")
        self.fx.transport.inject(Request("CANCEL", invite.uri, h), self.peer)

    # -- being called
    def invites(self) -> list[Request]:
        return self.fx.requests("INVITE", self.peer)

    def answer(self, invite: Request, status: int = 200, *, tag: str | None = None) -> Response:
        """Answer one of the switch's INVITEs (180, 183, 200 with our SDP, or an error)."""
        headers = [("Contact", self.contact)]
        body = b""
        if status == 200:
            result = self.sdp.answer(invite.body)
            body = result.answer.to_bytes()  # type: ignore[union-attr]
            headers.append(("Content-Type", "application/sdp"))
        response = make_response(invite, status, to_tag=tag or f"{self.user}-tag",
                                 headers=headers, body=body)  # fmt: skip
        self.fx.transport.inject(response, self.peer)
        return response

    def respond(self, request: Request, status: int = 200) -> None:
        """Answer an in-dialog request from the switch (its BYE, its re-INVITE)."""
        headers: list[tuple[str, str]] = []
        body = b""
        if request.method == "INVITE" and status == 200:
            headers = [("Contact", self.contact), ("Content-Type", "application/sdp")]
            result = self.sdp.answer(request.body)
            body = result.answer.to_bytes()  # type: ignore[union-attr]
        self.fx.transport.inject(make_response(request, status, headers=headers, body=body),
                                 self.peer)  # fmt: skip
