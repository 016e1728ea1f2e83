"""The asyncio shell around the sans-IO SIP layer: UDP and TCP sockets, one timer, no logic.

Rules
-----
* **Thin.** Bytes from a socket go to the parser (UDP) or a :class:`StreamFramer` (TCP), then
  to the :class:`TransactionLayer`; what the layer says to send is sent; every other layer
  event goes to the user's one callback, synchronously. All SIP decisions are made in the
  sans-IO modules; this module only moves bytes and runs the clock.
* **One timer.** After every layer call the shell re-arms a single ``loop.call_at`` for
  :meth:`TransactionLayer.next_deadline`; when it fires, :meth:`TransactionLayer.advance`
  gets ``loop.time()``. On Baton's virtual-time loop the SIP timers therefore run in virtual
  time too.
* **Malformed requests are answered** with the 400/413/505/513 that
  :func:`~baton.switch.sip.message.error_response` builds, sent back to where they came from,
  and reported as :class:`ParseFailed`. Malformed responses are dropped (and reported).
* **TCP connection reuse.** Responses go back over the connection the request came in on
  (the layer addresses them to the connection's peer address). Requests to a TCP peer use an
  open connection to that address if there is one, else a new one.
* **No fire-and-forget tasks.** The only tasks are outbound TCP connects; each is tracked and
  cancelled by :meth:`SipTransport.close`, which also closes every socket and the timer.

Use
---
::

    transport = SipTransport(["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"], on_event=handle)
    await transport.start()
    key = transport.send_request(request, Peer("udp", "127.0.0.1", 5070))  # adds the Via
    transport.send_response(event.key, make_response(event.request, 200, to_tag=tag))
    await transport.close()

``handle`` receives :class:`~baton.switch.sip.transaction.RequestReceived`,
:class:`~baton.switch.sip.transaction.ResponseReceived`,
:class:`~baton.switch.sip.transaction.AckReceived`,
:class:`~baton.switch.sip.transaction.StrayResponse`,
:class:`~baton.switch.sip.transaction.TransactionTimedOut`,
:class:`~baton.switch.sip.transaction.TransactionFailed`,
:class:`~baton.switch.sip.transaction.TransactionTerminated`,
:class:`~baton.switch.sip.transaction.MessageDropped` and :class:`ParseFailed`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from .errors import LocalProtocolError, SipParseError
from .message import (
    DEFAULT_LIMITS,
    Frame,
    FramingError,
    KeepAlivePing,
    MalformedFrame,
    ParserLimits,
    Request,
    Response,
    StreamFramer,
    error_response,
    is_keepalive,
    parse_message,
)
from .transaction import (
    LayerEvent,
    Peer,
    SendMessage,
    TimerConfig,
    TransactionKey,
    TransactionLayer,
    new_branch,
)

__all__ = ["ListenAddress", "ParseFailed", "SipTransport", "TransportEvent"]

log = logging.getLogger(__name__)

_UDP_ROUTES = 10_000  # peers whose receiving UDP socket is remembered


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """``udp:127.0.0.1:5060``, ``tcp:[::1]:5062`` — where to listen. Port 0 picks a free one."""

    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        transport, sep, rest = text.partition(":")
        transport = transport.lower()
        if not sep or transport not in ("udp", "tcp"):
            raise ValueError(f"listen address {text!r}: expected udp:HOST:PORT or tcp:HOST:PORT")
        if rest.startswith("["):
            host, _, port_text = rest[1:].partition("]:")
        else:
            host, _, port_text = rest.rpartition(":")
        if not host or not port_text.isdigit() or int(port_text) > 65535:
            raise ValueError(f"listen address {text!r}: expected udp:HOST:PORT or tcp:HOST:PORT")
        return cls(transport, host, int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ParseFailed:
    """Bytes from ``peer`` that were not a valid message (answered if they were a request)."""

    peer: Peer
    error: SipParseError
    answered: bool


TransportEvent = LayerEvent | ParseFailed


def _peer(transport: str, address: tuple[str, int] | tuple[str, int, int, int]) -> Peer:
    return Peer(transport, str(address[0]), int(address[1]))


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner._datagram(self, data, _peer("udp", addr))

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier send (port unreachable): UDP cannot say which one.
        log.debug("UDP error: %s", exc)


class _Tcp(asyncio.Protocol):
    def __init__(self, owner: SipTransport, limits: ParserLimits) -> None:
        self.owner = owner
        self.framer = StreamFramer(limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = _peer("tcp", transport.get_extra_info("peername"))
        self.owner._connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        if self.framer.broken:
            return
        for event in self.framer.feed(data):
            if isinstance(event, Frame):
                self.owner._received(event.message, self.peer)
            elif isinstance(event, KeepAlivePing):
                self.write(b"\r\n")  # RFC 5626 pong
            elif isinstance(event, MalformedFrame | FramingError):
                self.owner._malformed(event.error, self.peer, self.write)
                if isinstance(event, FramingError) and self.transport is not None:
                    self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.owner._connections.get(self.peer) is self:
            del self.owner._connections[self.peer]


class SipTransport:
    """SIP over UDP and TCP for one endpoint. See the module docstring."""

    def __init__(
        self,
        listen: Sequence[str],
        on_event: Callable[[TransportEvent], None],
        *,
        timers: TimerConfig | None = None,
        limits: ParserLimits = DEFAULT_LIMITS,
    ) -> None:
        self._listen = [ListenAddress.parse(text) for text in listen]
        if not self._listen:
            raise ValueError("at least one listen address is needed")
        self._on_event = on_event
        self._limits = limits
        self.layer = TransactionLayer(timers)
        self._udp: list[tuple[ListenAddress, _Udp]] = []
        # The UDP socket each recent peer talked to us on: answers leave from the same address.
        self._udp_route: collections.OrderedDict[Peer, _Udp] = collections.OrderedDict()
        self._servers: list[tuple[ListenAddress, asyncio.Server]] = []
        self._connections: dict[Peer, _Tcp] = {}
        self._pending: dict[Peer, list[tuple[bytes, TransactionKey | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- life cycle
    async def start(self) -> None:
        """Bind every listen address. Raises :class:`OSError` if one cannot be bound."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            for address in self._listen:
                if address.transport == "udp":
                    transport, protocol = await loop.create_datagram_endpoint(
                        lambda: _Udp(self), local_addr=(address.host, address.port)
                    )
                    bound = transport.get_extra_info("sockname")
                    self._udp.append((ListenAddress("udp", address.host, bound[1]), protocol))
                else:
                    server = await loop.create_server(
                        lambda: _Tcp(self, self._limits), address.host, address.port,
                        reuse_address=True,
                    )  # fmt: skip
                    bound = server.sockets[0].getsockname()
                    self._servers.append((ListenAddress("tcp", address.host, bound[1]), server))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening, close every connection, cancel the timer and tracked tasks."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, protocol in self._udp:
            if protocol.transport is not None:
                protocol.transport.close()
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for _, server in self._servers:
            server.close()
        for _, server in self._servers:
            await server.wait_closed()
        self._udp.clear()
        self._udp_route.clear()
        self._servers.clear()
        self._connections.clear()

    @property
    def addresses(self) -> list[ListenAddress]:
        """The bound addresses (with the real port where 0 was asked for)."""
        return [a for a, _ in self._udp] + [a for a, _ in self._servers]

    def address(self, transport: str) -> ListenAddress:
        for candidate in self.addresses:
            if candidate.transport == transport:
                return candidate
        raise LocalProtocolError(f"not listening on {transport}")

    def contact(self, user: str, transport: str = "udp") -> str:
        """A Contact value for ``user`` at our ``transport`` address."""
        address = self.address(transport)
        host = f"[{address.host}]" if ":" in address.host else address.host
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{user}@{host}:{address.port}{suffix}>"

    # -- for the TU
    def send_request(self, request: Request, peer: Peer) -> TransactionKey:
        """Send ``request`` to ``peer`` in a new client transaction; return its key.

        A request without Via gets our top Via (fresh branch, ``rport``) — the caller's
        object is updated, so that a later CANCEL can copy it. A CANCEL must already carry
        its INVITE's Via (:func:`~baton.switch.sip.dialog.make_cancel`).
        """
        self._add_via(request, peer)
        key, events = self.layer.send_request(request, peer, self._now())
        self._dispatch(events)
        return key

    def send_response(self, key: TransactionKey, response: Response) -> None:
        """Send ``response`` in server transaction ``key``. Raises
        :class:`~baton.switch.sip.errors.LocalProtocolError` if the transaction is gone or
        the response is not allowed in its state."""
        self._dispatch(self.layer.send_response(key, response, self._now()))

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        """Send outside any transaction (the ACK of a 2xx); adds our Via to a request."""
        if isinstance(message, Request):
            self._add_via(message, peer)
        self._dispatch(self.layer.send_stateless(message, peer))

    def terminate(self, key: TransactionKey) -> None:
        """Abandon a transaction (see :meth:`TransactionLayer.terminate`)."""
        self._dispatch(self.layer.terminate(key))

    def _add_via(self, request: Request, peer: Peer) -> None:
        if "Via" in request.headers:
            return
        if request.method == "CANCEL":
            raise LocalProtocolError("a CANCEL needs its INVITE's Via: build it with make_cancel()")
        address = self.address(peer.transport)
        host = f"[{address.host}]" if ":" in address.host else address.host
        request.headers.prepend(
            "Via",
            f"SIP/2.0/{peer.transport.upper()} {host}:{address.port};branch={new_branch()};rport",
        )

    # -- plumbing
    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _dispatch(self, events: list[LayerEvent]) -> None:
        for event in events:
            if isinstance(event, SendMessage):
                self._send(event.message.to_bytes(), event.peer, event.key)
            else:
                self._emit(event)
        self._rearm()

    def _emit(self, event: TransportEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            # The TU's bug must not take the transport down for every other call.
            log.exception("SIP event handler failed on %r", event)

    def _rearm(self) -> None:
        if self._closed or self._loop is None:
            return
        deadline = self.layer.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self._dispatch(self.layer.advance(self._now()))

    def _datagram(self, protocol: _Udp, data: bytes, peer: Peer) -> None:
        self._udp_route[peer] = protocol
        self._udp_route.move_to_end(peer)
        if len(self._udp_route) > _UDP_ROUTES:
            self._udp_route.popitem(last=False)
        if is_keepalive(data):
            return
        try:
            message = parse_message(data, self._limits)
        except SipParseError as exc:
            self._malformed(exc, peer, lambda payload: self._send_udp(payload, peer))
            return
        self._received(message, peer)

    def _received(self, message: Request | Response, peer: Peer) -> None:
        if self._closed:
            return
        self._dispatch(self.layer.receive(message, peer, self._now()))

    def _malformed(
        self, error: SipParseError, peer: Peer, reply: Callable[[bytes], object]
    ) -> None:
        answer = error_response(error)
        if answer is not None:
            reply(answer.to_bytes())
        self._emit(ParseFailed(peer, error, answer is not None))

    def _send(self, data: bytes, peer: Peer, key: TransactionKey | None) -> None:
        if peer.transport == "udp":
            if not self._send_udp(data, peer) and key is not None:
                self._dispatch(self.layer.transport_error(key, self._now()))
            return
        connection = self._connections.get(peer)
        if connection is not None and connection.transport is not None:
            if connection.transport.is_closing():
                if key is not None:
                    self._dispatch(self.layer.transport_error(key, self._now()))
                return
            connection.write(data)
            return
        self._connect(peer, data, key)

    def _send_udp(self, data: bytes, peer: Peer) -> bool:
        known = self._udp_route.get(peer)
        if known is not None and known.transport is not None and not known.transport.is_closing():
            known.transport.sendto(data, (peer.host, peer.port))
            return True
        family = socket.AF_INET6 if ":" in peer.host else socket.AF_INET
        for _, protocol in self._udp:
            transport = protocol.transport
            if transport is None or transport.is_closing():
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family != family:
                continue
            transport.sendto(data, (peer.host, peer.port))
            return True
        log.warning("no UDP socket to send to %s", peer)
        return False

    def _connect(self, peer: Peer, data: bytes, key: TransactionKey | None) -> None:
        queue = self._pending.get(peer)
        if queue is not None:  # a connect is already under way: queue behind it
            queue.append((data, key))
            return
        self._pending[peer] = [(data, key)]
        task = asyncio.get_running_loop().create_task(self._open(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                lambda: _Tcp(self, self._limits), peer.host, peer.port
            )
        except OSError as exc:
            log.info("TCP connect to %s failed: %s", peer, exc)
            for _, key in self._pending.pop(peer, []):
                if key is not None:
                    self._dispatch(self.layer.transport_error(key, self._now()))
            return
        # The connection registered itself under the address it reached, which is `peer`.
        self._connections.setdefault(peer, protocol)
        for payload, _ in self._pending.pop(peer, []):
            protocol.write(payload)

    def abort_connections(self) -> None:
        """Drop every TCP connection at once (for tests of connection loss)."""
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.abort()
