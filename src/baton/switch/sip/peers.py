"""Peer lines: calls between the tenants of a cluster, as SIP through the edge (docs/cluster.md,
"Calls between tenants").

Rules
-----
* **A peer call is a leg of a peer line.** ``[sip.peers] lines = N`` adds N users to the
  switch, ``peer-1`` … ``peer-N``, that no phone can register or authenticate as (they have no
  name a digest could use). A call *to* another tenant is a call to a free line, whose contact
  is set for that call to ``sip:NUMBER@EDGE`` (:meth:`PeerLines.target`); a call *from* another
  tenant arrives on a free line. The core and the flows see an ordinary user and leg.
* **A peer call is accepted only from the edge, and only with its proof.** The edge
  (``deploy/kamailio/kamailio.cfg``) adds ``X-Baton-Peer: sha256(SECRET:Call-ID:From user:
  Request-URI user)`` (hex; Kamailio's ``auth_xkeys_add``) to a request that came from a shard
  in its list, and removes that header from every other request. A shard takes an INVITE as a
  peer call only when it came from the edge's address (the bytes' source, never a Via) *and*
  the header matches; from the edge without the header it is a phone's call (digest, as
  always); with a wrong header it is refused (403). A phone cannot make the edge sign for it,
  and cannot reach the shard from the edge's address.
* The proof binds the call (its Call-ID) and both numbers: replaying a captured header only
  replays that same call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field

from .message import Request
from .uri import SipUri

__all__ = ["PEER_HEADER", "TENANT_HEADER", "PeerLine", "PeerLines", "line_ids", "peer_proof"]

#: The header the edge signs peer calls with.
PEER_HEADER = "X-Baton-Peer"
#: The header a shard names its tenant in on a call to another tenant: the receiving tenant
#: shows the caller as that tenant's (a proven call came from a shard, so it is the shard's).
TENANT_HEADER = "X-Baton-Tenant"


def peer_proof(secret: str, call_id: str, from_user: str, to_user: str) -> str:
    """The proof the edge adds to a peer call: ``sha256(secret:call-id:from:to)``, hex (what
    Kamailio's ``auth_xkeys_add(..., "sha256", "$ci:$fU:$rU")`` computes)."""
    data = f"{secret}:{call_id}:{from_user}:{to_user}".encode()
    return hashlib.sha256(data).hexdigest()


def line_ids(count: int) -> list[str]:
    return [f"peer-{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class PeerLine:
    """A peer line as the switch's directory holds it (a :class:`~.config.SipUser`)."""

    id: str
    numbers: tuple[str, ...] = ()
    # Never used: a line has no name a digest could look up. Random all the same.
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    contact: str | None = None
    max_priority: int | None = None


@dataclass
class PeerLines:
    """``[sip.peers]``: the edge, its secret, the lines and the dial plan's prefixes."""

    edge_host: str
    edge_port: int
    edge_transport: str
    secret: str
    lines: tuple[str, ...]
    numbers: tuple[str, ...]
    #: this tenant's name, sent in :data:`TENANT_HEADER` on each call to another tenant
    tenant: str | None = None
    _next: int = 0

    def users(self) -> list[PeerLine]:
        return [PeerLine(line) for line in self.lines]

    def from_edge(self, host: str, port: int) -> bool:
        """Whether a request whose bytes came from ``host:port`` came from the edge: over UDP
        its listen address exactly; over TCP or TLS its host (a connection's port is the
        edge's choice)."""
        if host != self.edge_host:
            return False
        return port == self.edge_port or self.edge_transport != "udp"

    def contact(self, number: str) -> str:
        """The URI a call to ``number`` of another tenant is sent to: the edge."""
        transport = "" if self.edge_transport == "udp" else f";transport={self.edge_transport}"
        return f"<sip:{number}@{self.edge_host}:{self.edge_port}{transport}>"

    def proven(self, request: Request) -> bool | None:
        """Whether ``request`` (from the edge's address) carries a valid proof; ``None`` when it
        carries none (a phone's request relayed by the edge)."""
        given = request.headers.get(PEER_HEADER)
        if given is None:
            return None
        src, dst = request.from_.uri, request.uri
        src_user = src.user_text if isinstance(src, SipUri) else None
        dst_user = dst.user_text if isinstance(dst, SipUri) else None
        want = peer_proof(self.secret, request.call_id, src_user or "", dst_user or "")
        return hmac.compare_digest(given.strip().lower(), want)

    def free(self, busy: Collection[str]) -> str | None:
        """A line not in ``busy``, the next after the last one given (round robin)."""
        n = len(self.lines)
        for i in range(n):
            line = self.lines[(self._next + i) % n]
            if line not in busy:
                self._next = (self._next + i + 1) % n
                return line
        return None
