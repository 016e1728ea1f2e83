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
* **Bounded** (:class:`TransportLimits`, docs/sip.md "Bounds and overload"): a message larger
  than ``max_message_bytes`` is refused (513 when it can be answered, else dropped; a TCP
  connection is closed); inbound TCP connections are limited per source host and in all, and
  closed when idle (sooner if they never sent a message); a connection whose peer does not read
  is closed once ``tcp_max_write_buffer`` bytes wait (keep-alive pongs are only sent into an
  empty buffer); new requests beyond ``max_transactions_per_source`` unanswered transactions
  from one host, or ``max_transactions`` in all, get a stateless 503 with ``Retry-After``.
* **SIP over WebSocket** (RFC 7118, ``ws:`` and ``wss:`` — the latter with the TLS context of
  ``tls:``): each WebSocket message is one SIP message, with the ``sip`` subprotocol. The
  framing is the ``websockets`` library's sans-IO server protocol under the same connection
  class as TCP (bounds, idle sweep, reuse of the connection for requests to the peer). Baton
  never opens a WebSocket: a browser is reached over the connection it registered on, and a
  request for a WebSocket peer without one fails at once (a transport error).
* **Loop lag.** While messages arrive, a probe timer measures how late the loop runs its
  callbacks; :attr:`SipTransport.overloaded` says it is later than ``max_lag`` (the switch then
  sheds new calls and registrations with 503).

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
:class:`~baton.switch.sip.transaction.MessageDropped`, :class:`ParseFailed` and
:class:`ConnectionClosed` (a WebSocket gone: the registrations made over it can never be
reached again).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import socket
import ssl
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final, cast

from websockets.datastructures import Headers as WsHeaders
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.http11 import Request as WsRequest
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

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
    make_response,
    parse_message,
)
from .transaction import (
    LayerEvent,
    Peer,
    RequestReceived,
    SendMessage,
    TimerConfig,
    TransactionKey,
    TransactionLayer,
    TransactionTerminated,
    new_branch,
)

__all__ = [
    "ConnectionClosed",
    "ListenAddress",
    "ParseFailed",
    "SipTransport",
    "TransportEvent",
    "TransportLimits",
]

log = logging.getLogger(__name__)

_UDP_ROUTES = 10_000  # peers whose receiving UDP socket is remembered
_LAG_PROBE = 0.05  # seconds between a message's arrival and the lag probe's due time
_LAG_MEMORY = 1.0  # a lag measurement older than this says nothing about now
# The UDP socket's receive buffer (the kernel caps it at net.core.rmem_max): a burst, or the
# loop being descheduled for a moment, must not drop phones' requests in the kernel.
_UDP_RECEIVE_BUFFER = 1 << 20
_UDP_BATCH = 32  # datagrams read per readiness of a UDP socket (see _Udp)
_UDP_MAX = 65_536  # a receive buffer that holds any datagram (larger than any bound)


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Bounds that keep one sender, or a crowd, from exhausting the server (docs/sip.md,
    "Bounds and overload"). The defaults fit thousands of phones with room to spare."""

    max_message_bytes: int = 16_384  # a UDP datagram or one TCP frame
    tcp_max_connections: int = 4_096  # inbound TCP connections in all
    tcp_max_per_source: int = 128  # inbound TCP connections from one host
    tcp_idle_timeout: float = 900.0  # a connection silent this long is closed
    tcp_first_message_timeout: float = 32.0  # ... and this long if it never sent a message
    tcp_max_write_buffer: int = 1 << 20  # bytes waiting for a peer that does not read
    max_transactions_per_source: int = 1_000  # unanswered server transactions from one host
    max_transactions: int = 20_000  # unanswered server transactions in all
    max_lag: float = 0.25  # loop lag (s) above which the switch sheds new work
    retry_after: int = 5  # seconds, in the 503s of shedding

    def parser_limits(self) -> ParserLimits:
        size = self.max_message_bytes
        return ParserLimits(
            max_message_bytes=size,
            max_head_bytes=min(DEFAULT_LIMITS.max_head_bytes, size),
            max_body_bytes=min(DEFAULT_LIMITS.max_body_bytes, size),
        )


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """``udp:127.0.0.1:5060``, ``tcp:[::1]:5062``, ``tls:127.0.0.1:5061``, ``ws:…``,
    ``wss:…`` — where to listen. Port 0 picks a free one."""

    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        transport, sep, rest = text.partition(":")
        transport = transport.lower()
        if not sep or transport not in _TRANSPORTS:
            raise ValueError(f"listen address {text!r}: expected {_EXPECTED}")
        if rest.startswith("["):
            host, _, port_text = rest[1:].partition("]:")
        else:
            host, _, port_text = rest.rpartition(":")
        if not host or not port_text.isdigit() or int(port_text) > 65535:
            raise ValueError(f"listen address {text!r}: expected {_EXPECTED}")
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


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The WebSocket connection to ``peer`` ended. Baton opens no WebSocket, so nothing sent
    to ``peer`` can arrive any more: the browser must connect and register again."""

    peer: Peer


TransportEvent = LayerEvent | ParseFailed | ConnectionClosed


def _peer(transport: str, address: tuple[str, int] | tuple[str, int, int, int]) -> Peer:
    return Peer(transport, str(address[0]), int(address[1]))


class _Udp:
    """A bound UDP socket, read straight from the loop's selector rather than through an
    asyncio datagram transport: each time it is readable, every datagram waiting is read
    (up to ``_UDP_BATCH``), where the transport reads one per pass of the loop — under load a
    pass (``epoll_wait`` and the loop's own work) per message. Sends go straight to the
    socket; a datagram the kernel will not take now is dropped, as the network may drop any
    (SIP over UDP retransmits)."""

    def __init__(self, owner: SipTransport, sock: socket.socket, loop: asyncio.AbstractEventLoop):
        self.owner = owner
        self.sock = sock
        self.family = sock.family
        self._loop = loop
        self._fd = sock.fileno()
        self.closed = False
        loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        datagram = self.owner._datagram
        for _ in range(_UDP_BATCH):
            try:
                data, addr = recvfrom(_UDP_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error for an earlier send (port unreachable): UDP cannot say which one.
                log.debug("UDP error: %s", exc)
                continue
            datagram(self, data, addr)
            if self.closed:
                return

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, address)
        except OSError as exc:
            log.debug("UDP send to %s failed: %s", address, exc)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.remove_reader(self._fd)
            self.sock.close()


async def _bind_udp(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (the first address that binds)."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RECEIVE_BUFFER)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"cannot bind UDP to {host}:{port}")


class _Tcp(asyncio.Protocol):
    """A TCP connection, or a TLS one (``kind="tls"``: asyncio runs the TLS under it)."""

    def __init__(
        self, owner: SipTransport, limits: ParserLimits, *, inbound: bool, kind: str = "tcp"
    ) -> None:
        self.owner = owner
        self.kind = kind
        self.framer = StreamFramer(limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.inbound = inbound
        self.counted = False  # counted in the owner's inbound connection bounds
        self.last_rx = 0.0
        self.messages = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = _peer(self.kind, transport.get_extra_info("peername"))
        if not self.owner._admit(self):
            self.transport.abort()
            return
        self.owner._connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        if self.framer.broken:
            return
        self.last_rx = self.owner._now()
        self.owner._probe_lag()
        for event in self.framer.feed(data):
            if isinstance(event, Frame):
                self.messages += 1
                self.owner._received(event.message, self.peer)
            elif isinstance(event, KeepAlivePing):
                # RFC 5626 pong, only into an empty buffer: a peer that pings and never reads
                # must not make us queue pongs without end.
                if self.transport is not None and not self.transport.get_write_buffer_size():
                    self.write(b"\r\n")
            elif isinstance(event, MalformedFrame | FramingError):
                self.owner._malformed(event.error, self.peer, self.write)
                if isinstance(event, FramingError) and self.transport is not None:
                    self.transport.close()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() + len(data) > self.owner.bounds.tcp_max_write_buffer:
            log.info("TCP peer %s does not read: connection closed", self.peer)
            transport.abort()
            return
        transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._release(self)
        if self.peer is not None and self.owner._connections.get(self.peer) is self:
            del self.owner._connections[self.peer]


_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
_EXPECTED = "udp:, tcp:, tls:, ws: or wss:HOST:PORT"
_SIP: Final = Subprotocol("sip")


class _Ws(_Tcp):
    """A WebSocket connection (``kind`` ``ws`` or ``wss``) carrying SIP (RFC 7118)."""

    def __init__(self, owner: SipTransport, limits: ParserLimits, *, kind: str) -> None:
        super().__init__(owner, limits, inbound=True, kind=kind)
        self.limits = limits
        self.ws = ServerProtocol(
            subprotocols=[_SIP], max_size=limits.max_head_bytes + limits.max_body_bytes
        )
        self.parts: list[bytes] = []  # a fragmented message so far

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self.last_rx = self.owner._now()
        self.owner._probe_lag()
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, WsRequest):
                response = ws.accept(event)
                if response.status_code == 101 and not _offers_sip(event.headers):
                    response = ws.reject(400, "the sip subprotocol is required (RFC 7118)\n")
                ws.send_response(response)
            elif isinstance(event, WsFrame):
                self._frame(event)
        self._flush()

    def _frame(self, frame: WsFrame) -> None:
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            return  # ping, pong, close: the protocol object answers them
        self.parts.append(bytes(frame.data))
        if not frame.fin:
            return
        data, self.parts = b"".join(self.parts), []
        assert self.peer is not None
        if is_keepalive(data):
            return
        try:
            message = parse_message(data, self.limits)
        except SipParseError as exc:
            self.owner._malformed(exc, self.peer, self.write)
            return
        self.messages += 1
        self.owner._received(message, self.peer)

    def _flush(self) -> None:
        transport = self.transport
        for chunk in self.ws.data_to_send():
            if transport is None or transport.is_closing():
                return
            if chunk:
                transport.write(chunk)
            else:
                transport.close()  # the closing handshake is done

    def write(self, data: bytes) -> None:
        if self.ws.state.name != "OPEN":
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() + len(data) > self.owner.bounds.tcp_max_write_buffer:
            log.info("WebSocket peer %s does not read: connection closed", self.peer)
            transport.abort()
            return
        self.ws.send_text(data)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.receive_eof()
        super().connection_lost(exc)
        if self.peer is not None and self.messages:
            self.owner._emit(ConnectionClosed(self.peer))


def _offers_sip(headers: WsHeaders) -> bool:
    offered = ",".join(headers.get_all("Sec-WebSocket-Protocol"))
    return "sip" in (p.strip().lower() for p in offered.split(","))


class SipTransport:
    """SIP over UDP, TCP, TLS and WebSocket for one endpoint. See the module docstring."""

    def __init__(
        self,
        listen: Sequence[str],
        on_event: Callable[[TransportEvent], None],
        *,
        timers: TimerConfig | None = None,
        limits: ParserLimits | None = None,
        bounds: TransportLimits | None = None,
        tls: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
    ) -> None:
        self._listen = [ListenAddress.parse(text) for text in listen]
        if not self._listen:
            raise ValueError("at least one listen address is needed")
        self._on_event = on_event
        if tls is None and any(a.transport in ("tls", "wss") for a in self._listen):
            raise ValueError("a tls: or wss: listen address needs a TLS server context")
        self._tls = tls  # for tls: listen addresses
        self._tls_client = tls_client  # for connections we open to tls peers
        self.bounds = bounds or TransportLimits()
        self._limits = limits or self.bounds.parser_limits()
        # Bounds (see the module docstring) and what they refused, for metrics and tests.
        self._inbound_tcp: collections.Counter[str] = collections.Counter()
        self._inbound_total = 0
        self._sweep: asyncio.TimerHandle | None = None
        self._unanswered: dict[TransactionKey, str] = {}  # server transaction → source host
        self._unanswered_by_host: collections.Counter[str] = collections.Counter()
        self._lag = 0.0
        self._lag_at = float("-inf")
        self._lag_probe: asyncio.TimerHandle | None = None
        self.refused: collections.Counter[str] = collections.Counter()
        self.layer = TransactionLayer(timers)
        self._udp: list[tuple[ListenAddress, _Udp]] = []
        # The UDP socket each recent peer talked to us on: answers leave from the same address.
        self._udp_route: collections.OrderedDict[Peer, _Udp] = collections.OrderedDict()
        # The Peer of each recent UDP source address (a datagram's address is a plain tuple).
        self._udp_peers: dict[tuple[str, int], Peer] = {}
        self._servers: list[tuple[ListenAddress, asyncio.Server]] = []
        # The bound addresses, and the first by transport: read several times per call, and
        # they change only at start and close (see _bound).
        self._addresses: list[ListenAddress] = []
        self._by_transport: dict[str, ListenAddress] = {}
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
                    sock = await _bind_udp(loop, address.host, address.port)
                    bound = sock.getsockname()
                    protocol = _Udp(self, sock, loop)
                    self._udp.append((ListenAddress("udp", address.host, bound[1]), protocol))
                    self._bound([a for a, _ in self._udp] + [a for a, _ in self._servers])
                else:
                    kind = address.transport
                    server = await loop.create_server(
                        lambda kind=kind: (
                            _Ws(self, self._limits, kind=kind) if kind in ("ws", "wss")
                            else _Tcp(self, self._limits, inbound=True, kind=kind)
                        ),
                        address.host, address.port, reuse_address=True,
                        ssl=self._tls if kind in ("tls", "wss") else None,
                    )  # fmt: skip
                    bound = server.sockets[0].getsockname()
                    self._servers.append((ListenAddress(kind, address.host, bound[1]), server))
                    self._bound([a for a, _ in self._udp] + [a for a, _ in self._servers])
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening, close every connection, cancel the timer and tracked tasks."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for handle in (self._sweep, self._lag_probe):
            if handle is not None:
                handle.cancel()
        self._sweep = self._lag_probe = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, protocol in self._udp:
            protocol.close()
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for _, server in self._servers:
            server.close()
        for _, server in self._servers:
            await server.wait_closed()
        self._udp.clear()
        self._udp_route.clear()
        self._udp_peers.clear()
        self._servers.clear()
        self._bound([])
        self._connections.clear()

    def _bound(self, addresses: list[ListenAddress]) -> None:
        """The bound addresses are now these (in the order of the listen list)."""
        self._addresses = addresses
        self._by_transport = {}
        for a in addresses:
            self._by_transport.setdefault(a.transport, a)

    @property
    def addresses(self) -> list[ListenAddress]:
        """The bound addresses (with the real port where 0 was asked for)."""
        return list(self._addresses)

    @property
    def transports(self) -> Collection[str]:
        """The transports Baton listens on (``udp``, ``tcp``, ``ws``...)."""
        return self._by_transport.keys()

    def address(self, transport: str) -> ListenAddress:
        candidate = self._by_transport.get(transport)
        if candidate is None:
            raise LocalProtocolError(f"not listening on {transport}")
        return candidate

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
        if response.status >= 200:
            self._answered(key)

    # -- bounds and overload
    @property
    def lag(self) -> float:
        """How late (s) the loop ran the last lag probe, if that was recent; else 0."""
        return self._lag if self._now() - self._lag_at <= _LAG_MEMORY else 0.0

    @property
    def overloaded(self) -> bool:
        """The loop lags more than ``bounds.max_lag`` (see the module docstring)."""
        return self.lag > self.bounds.max_lag

    @property
    def unanswered(self) -> int:
        """Server transactions not yet given a final response."""
        return len(self._unanswered)

    @property
    def tcp_connections(self) -> int:
        """Inbound TCP connections open now."""
        return self._inbound_total

    def _probe_lag(self) -> None:
        if self._lag_probe is not None or self._closed or self._loop is None:
            return
        due = self._loop.time() + _LAG_PROBE
        self._lag_probe = self._loop.call_at(due, self._lag_sample, due)

    def _lag_sample(self, due: float) -> None:
        self._lag_probe = None
        now = self._now()
        self._lag, self._lag_at = now - due, now

    def _admit(self, connection: _Tcp) -> bool:
        """Count an inbound connection against the bounds, or refuse it."""
        if not connection.inbound or connection.peer is None:
            return True
        host = connection.peer.host
        bounds = self.bounds
        if self._inbound_total >= bounds.tcp_max_connections:
            self.refused["tcp_connections"] += 1
            return False
        if self._inbound_tcp[host] >= bounds.tcp_max_per_source:
            self.refused["tcp_connections_per_source"] += 1
            return False
        connection.counted = True
        connection.last_rx = self._now()
        self._inbound_tcp[host] += 1
        self._inbound_total += 1
        self._arm_sweep()
        return True

    def _release(self, connection: _Tcp) -> None:
        if connection.counted and connection.peer is not None:
            connection.counted = False
            host = connection.peer.host
            self._inbound_tcp[host] -= 1
            if self._inbound_tcp[host] <= 0:
                del self._inbound_tcp[host]
            self._inbound_total -= 1

    def _arm_sweep(self) -> None:
        if self._sweep is None and not self._closed and self._loop is not None:
            bounds = self.bounds
            every = max(0.5, min(bounds.tcp_first_message_timeout, bounds.tcp_idle_timeout) / 4)
            self._sweep = self._loop.call_later(every, self._sweep_idle)

    def _sweep_idle(self) -> None:
        """Close inbound connections idle too long; re-armed while any remain."""
        self._sweep = None
        now = self._now()
        bounds = self.bounds
        for connection in list(self._connections.values()):
            if not connection.counted or connection.transport is None:
                continue
            limit = (
                bounds.tcp_idle_timeout
                if connection.messages
                else (bounds.tcp_first_message_timeout)
            )
            if now - connection.last_rx >= limit:
                self.refused["tcp_idle_closed"] += 1
                connection.transport.abort()
        if self._inbound_total:
            self._arm_sweep()

    def _shed(self, request: Request, peer: Peer) -> bool:
        """A new request beyond the transaction bounds: answer 503 statelessly (RFC 3261
        §21.5.4) and tell the caller to drop it."""
        if request.method in ("ACK", "CANCEL"):
            return False
        bounds = self.bounds
        if self._unanswered_by_host[peer.host] >= bounds.max_transactions_per_source:
            reason = "transactions_per_source"
        elif len(self._unanswered) >= bounds.max_transactions:
            reason = "transactions"
        else:
            return False
        if self.layer.knows(request):
            return False  # a retransmission of a request already under way is never shed
        self.refused[reason] += 1
        busy = make_response(request, 503, to_tag=secrets.token_hex(6),
                             headers=[("Retry-After", str(bounds.retry_after))])  # fmt: skip
        self._send(busy.to_bytes(), peer, None)
        return True

    def _answered(self, key: TransactionKey) -> None:
        host = self._unanswered.pop(key, None)
        if host is not None:
            self._unanswered_by_host[host] -= 1
            if self._unanswered_by_host[host] <= 0:
                del self._unanswered_by_host[host]

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
                if isinstance(event, RequestReceived) and event.request.method != "ACK":
                    self._unanswered[event.key] = event.peer.host
                    self._unanswered_by_host[event.peer.host] += 1
                elif isinstance(event, TransactionTerminated):
                    self._answered(event.key)
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
        at = self._timer_at
        if self._timer is not None and at is not None and (deadline is None or deadline > at):
            # The armed timer is early, not late: let it fire (advance() then finds nothing
            # due, and the next rearm sets the real deadline) rather than cancel and schedule
            # a new loop timer, which the loop's heap handles in Python, ~10 times per call.
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

    def _datagram(self, protocol: _Udp, data: bytes, address: tuple[str, int]) -> None:
        if self._lag_probe is None:
            self._probe_lag()
        routes = self._udp_route
        peer = self._udp_peers.get(address)
        if peer is None:
            peer = _peer("udp", address)
            if len(self._udp_peers) >= _UDP_ROUTES:
                self._udp_peers.clear()
            self._udp_peers[address] = peer
        if routes.get(peer) is protocol:
            routes.move_to_end(peer)
        else:
            routes[peer] = protocol
            routes.move_to_end(peer)
            if len(routes) > _UDP_ROUTES:
                routes.popitem(last=False)
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
        if isinstance(message, Request) and self._shed(message, peer):
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
        if peer.transport in ("ws", "wss"):
            # Baton opens no WebSocket: the browser's own connection is gone.
            if key is not None:
                self._dispatch(self.layer.transport_error(key, self._now()))
            return
        self._connect(peer, data, key)

    def _send_udp(self, data: bytes, peer: Peer) -> bool:
        known = self._udp_route.get(peer)
        if known is not None and not known.closed:
            known.sendto(data, (peer.host, peer.port))
            return True
        family = socket.AF_INET6 if ":" in peer.host else socket.AF_INET
        for _, protocol in self._udp:
            if protocol.closed or protocol.family != family:
                continue
            protocol.sendto(data, (peer.host, peer.port))
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
            tls = peer.transport == "tls"
            _, protocol = await loop.create_connection(
                lambda: _Tcp(self, self._limits, inbound=False, kind=peer.transport),
                peer.host, peer.port,
                ssl=(self._tls_client or ssl.create_default_context()) if tls else None,
            )  # fmt: skip
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
