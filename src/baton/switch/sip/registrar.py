"""A sans-IO SIP registrar (RFC 3261 §10.3) with digest authentication and a failure throttle.

Rules
-----
* :meth:`Registrar.process` takes a REGISTER, the source it came from and ``now``, and
  returns the response to send. It never raises on what the client sent.
* **Contacts are stored exactly as sent** (:attr:`Binding.contact_text`, :attr:`Binding.uri`):
  the URI is later used as the Request-URI byte for byte. baresip registers
  ``<sip:alice-0x55…@127.0.0.1:5064>`` for AOR ``alice``; that is the URI an INVITE to alice
  must carry. Bindings match by RFC 3261 §19.1.4 URI comparison.
* **AORs are user names.** Baton serves one domain: the AOR of ``sip:alice@anything`` is
  ``alice`` (override with ``aor_of``). An authenticated user may register only its own AOR
  (override with ``may_register``).
* **Expiry** comes from the contact's ``expires`` parameter, else the Expires header, else
  ``default_expires``; 0 removes the binding; below ``min_expires`` is refused with 423 Interval
  Too Brief (and Min-Expires); above ``max_expires`` is cut down to it. ``Contact: *`` with
  ``Expires: 0`` removes every binding of the AOR.
* **Ordering.** A REGISTER with the Call-ID of an existing binding and a CSeq not higher than
  the one stored is out of order and fails with 500, changing nothing (the update is atomic).
* **Static contacts** (trunks, test tools, ``contact =`` in the config) are added with
  :meth:`Registrar.add_static`, never expire and are not touched by REGISTER.
* **Throttling.** Wrong credentials are counted per source by an :class:`AuthThrottle`; a
  source over the limit is refused (403 with Retry-After) before any digest work.

Theory of operation
-------------------
``process`` follows §10.3: check the AOR and Require, throttle, authenticate (401 challenge,
``stale=true`` for an old nonce, 403 for wrong credentials), authorise, then plan every
Contact's change, check the whole plan (423, 500, 400) and only then apply it, answering 200
with the AOR's current bindings and their remaining lifetimes. Time is an input: bindings
store absolute expiry times on the caller's clock, and :meth:`Registrar.contacts` answers
"who is alice now?".
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from .digest import AuthOutcome, DigestAuthenticator, Secret
from .errors import LocalProtocolError, SipParseError
from .message import Request, Response, make_response, new_tag
from .uri import NameAddress, SipUri, Uri, parse_name_addr

__all__ = ["AuthThrottle", "Binding", "Registrar", "user_part_aor"]


def user_part_aor(uri: Uri) -> str | None:
    """The default AOR of a URI: its user part, unescaped (``sip:alice@h`` → ``alice``)."""
    if isinstance(uri, SipUri):
        return uri.user_text
    return None


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an AOR."""

    aor: str
    contact: NameAddress
    contact_text: str  # the Contact value exactly as received (or configured)
    expires_at: float | None  # None: a static contact, never expires
    call_id: str | None = None
    cseq: int | None = None
    q: float = 1.0
    source: str | None = None
    registered_at: float = 0.0
    flow: object = None  # what the caller passed as `flow`: e.g. the TCP peer to reuse
    user_agent: str | None = None  # the REGISTER's User-Agent (presence: which phone)
    transport: str | None = None  # UDP, TCP, TLS… from the REGISTER's top Via
    #: The REGISTER's Path header values (RFC 3327), in order: the proxies (a cluster's edge)
    #: requests to this contact must go through, as a Route set.
    path: tuple[str, ...] = ()

    @property
    def uri(self) -> Uri:
        """The URI to send requests for this AOR to (the Request-URI), as registered."""
        return self.contact.uri

    @property
    def static(self) -> bool:
        return self.expires_at is None

    def expires_in(self, now: float) -> int:
        if self.expires_at is None:
            return 0
        return max(0, int(self.expires_at - now + 0.5))

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


def throttle_key(source: str, username: str | None) -> str:
    """What :class:`AuthThrottle` counts failures against: the pair (source IP, user), so that
    failures for one user block neither the other users behind that address nor that user
    elsewhere (docs/sip.md, "Digest failures")."""
    return source if username is None else f"{source} {username}"


class AuthThrottle:
    """Counts authentication failures per key (see :func:`throttle_key`); blocks a key that
    fails too often.

    ``max_failures`` failures within ``window`` seconds block the source for ``block``
    seconds. Sans-IO: feed it ``(source, now)``. Bounded to ``max_sources`` entries.
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 60.0,
        block: float = 60.0,
        max_sources: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self._max_sources = max_sources
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._blocked: dict[str, float] = {}

    def allowed(self, source: str, now: float) -> bool:
        until = self._blocked.get(source)
        if until is None:
            return True
        if now >= until:
            del self._blocked[source]
            return True
        return False

    def retry_after(self, source: str, now: float) -> int:
        until = self._blocked.get(source)
        return 0 if until is None else max(1, int(until - now + 0.999))

    def record_failure(self, source: str, now: float) -> None:
        failures = self._failures.pop(source, None) or collections.deque()
        failures.append(now)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) >= self.max_failures:
            self._blocked[source] = now + self.block
            return
        self._failures[source] = failures
        while len(self._failures) > self._max_sources:
            self._failures.popitem(last=False)

    def record_success(self, source: str) -> None:
        self._failures.pop(source, None)


@dataclass(slots=True)
class _Plan:
    remove: list[Binding] = field(default_factory=list)
    add: list[Binding] = field(default_factory=list)


class _Refusal(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class Registrar:
    """Bindings of AORs to contacts, maintained by REGISTER. See the module docstring."""

    def __init__(
        self,
        *,
        authenticator: DigestAuthenticator | None,
        lookup: Callable[[str], Secret | None],
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        throttle: AuthThrottle | None = None,
        aor_of: Callable[[Uri], str | None] = user_part_aor,
        may_register: Callable[[str, str], bool] = lambda user, aor: user == aor,
        supported: frozenset[str] = frozenset(),
    ) -> None:
        self.authenticator = authenticator
        self.lookup = lookup
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.throttle = throttle
        self.aor_of = aor_of
        self.may_register = may_register
        self.supported = supported
        self._bindings: dict[str, list[Binding]] = {}

    # -- queries
    def aors(self) -> list[str]:
        return sorted(self._bindings)

    def contacts(self, aor: str, now: float) -> list[Binding]:
        """The AOR's live bindings, best first (highest q, then most recently registered)."""
        live = [b for b in self._bindings.get(aor, []) if b.live(now)]
        return sorted(live, key=lambda b: (-b.q, -b.registered_at))

    def expire(self, now: float) -> list[Binding]:
        """Drop expired bindings; return them (for the log and the event stream)."""
        gone: list[Binding] = []
        for aor in list(self._bindings):
            keep: list[Binding] = []
            for binding in self._bindings[aor]:
                (keep if binding.live(now) else gone).append(binding)
            self._store(aor, keep)
        return gone

    # -- hand-over to another process (a standby shard, docs/cluster.md)
    def snapshot(self, now: float) -> list[dict[str, object]]:
        """The live registered (not static, not over a WebSocket) bindings, JSON-ready, with
        their lifetimes left."""
        return [
            {
                "aor": b.aor,
                "contact": b.contact_text,
                "expires_in": b.expires_in(now),
                "call_id": b.call_id,
                "cseq": b.cseq,
                "q": b.q,
                "source": b.source,
                "user_agent": b.user_agent,
                "transport": b.transport,
                "path": list(b.path),
            }
            for aor in sorted(self._bindings)
            for b in self._bindings[aor]
            # A browser is reached only over its own WebSocket, which ends with this process.
            if not b.static and b.live(now) and b.transport not in ("WS", "WSS")
        ]

    def restore(self, entries: list[dict[str, object]], now: float, *, age: float = 0.0) -> int:
        """Re-create bindings another process snapshotted ``age`` seconds ago (those still
        live, of AORs ``lookup`` knows); return how many. A binding the AOR already has is
        left as it is."""
        restored = 0
        for e in entries:
            try:
                aor = str(e["aor"])
                left = float(e["expires_in"]) - age  # type: ignore[arg-type]
                address = parse_name_addr(str(e["contact"]), "Contact")
            except (KeyError, TypeError, ValueError, SipParseError):
                continue
            if left <= 0 or self.lookup(aor) is None:
                continue
            if any(b.uri.equivalent(address.uri) for b in self._bindings.get(aor, [])):
                continue
            cseq = e.get("cseq")
            binding = Binding(
                aor,
                address,
                str(e["contact"]),
                now + left,
                call_id=None if e.get("call_id") is None else str(e["call_id"]),
                cseq=cseq if isinstance(cseq, int) else None,
                q=float(e.get("q") or 1.0),  # type: ignore[arg-type]
                source=None if e.get("source") is None else str(e["source"]),
                registered_at=now,
                user_agent=None if e.get("user_agent") is None else str(e["user_agent"]),
                transport=None if e.get("transport") is None else str(e["transport"]),
                path=tuple(str(p) for p in e.get("path") or ()),  # type: ignore[attr-defined]
            )
            self._bindings.setdefault(aor, []).append(binding)
            restored += 1
        return restored

    # -- static contacts
    def add_static(self, aor: str, contact: str, *, q: float = 1.0) -> Binding:
        """Bind ``contact`` (a URI or name-addr) to ``aor`` for good.

        Raises :class:`SipParseError` if ``contact`` does not parse.
        """
        address = parse_name_addr(contact, "Contact")
        binding = Binding(aor, address, contact, None, q=q)
        self._bindings.setdefault(aor, []).append(binding)
        return binding

    def remove_static(self, aor: str, contact: str) -> bool:
        address = parse_name_addr(contact, "Contact")
        before = self._bindings.get(aor, [])
        after = [b for b in before if not (b.static and b.uri.equivalent(address.uri))]
        self._store(aor, after)
        return len(after) != len(before)

    def drop_flow(self, flow: object) -> list[Binding]:
        """Drop the registered bindings kept on ``flow`` (a WebSocket connection that closed:
        the phone behind them cannot be reached over anything else); return them."""
        gone: list[Binding] = []
        for aor in list(self._bindings):
            before = self._bindings[aor]
            lost = [b for b in before if not b.static and b.flow == flow]
            if lost:
                gone += lost
                self._store(aor, [b for b in before if b not in lost])
        return gone

    def forget(self, aor: str, *, static_only: bool = False) -> list[Binding]:
        """Drop ``aor``'s bindings (its user was removed), or only its static ones; return
        them."""
        before = self._bindings.get(aor, [])
        gone = [b for b in before if b.static or not static_only]
        self._store(aor, [b for b in before if b not in gone])
        return gone

    # -- REGISTER
    def process(
        self, request: Request, *, source: str, now: float, flow: object = None
    ) -> Response:
        """Handle a REGISTER from ``source`` (a host, the throttle's key) at time ``now``.

        ``flow`` is kept on the bindings this request creates or refreshes: pass the peer the
        REGISTER came from (a TCP connection) so that requests to the phone can reuse it.
        """
        if request.method != "REGISTER":
            raise LocalProtocolError("the registrar processes REGISTER only")
        to_tag = new_tag()
        try:
            aor = self._check_aor(request, to_tag)
            self._check_require(request, to_tag)
            self._authenticate(request, aor, source, now, to_tag)
            plan = self._plan(request, aor, source, now, to_tag, flow)
        except _Refusal as refusal:
            return refusal.response
        except SipParseError as exc:  # a header the parser did not validate (e.g. Require)
            return make_response(request, 400, exc.reason, to_tag=to_tag)
        bindings = [b for b in self._bindings.get(aor, []) if b not in plan.remove]
        bindings += plan.add
        self._store(aor, bindings)
        return self._ok(request, aor, now, to_tag)

    def _store(self, aor: str, bindings: list[Binding]) -> None:
        if bindings:
            self._bindings[aor] = bindings
        else:
            self._bindings.pop(aor, None)

    def _check_aor(self, request: Request, to_tag: str) -> str:
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri):
            raise _Refusal(make_response(request, 400, "To Must Be A SIP URI", to_tag=to_tag))
        aor = self.aor_of(to_uri)
        if not aor:
            raise _Refusal(make_response(request, 404, to_tag=to_tag))
        return aor

    def _check_require(self, request: Request, to_tag: str) -> None:
        unsupported = [o for o in request.headers.get_all("Require") if o not in self.supported]
        if unsupported:
            raise _Refusal(
                make_response(request, 420, to_tag=to_tag,
                              headers=[("Unsupported", o) for o in unsupported])
            )  # fmt: skip

    def _authenticate(
        self, request: Request, aor: str, source: str, now: float, to_tag: str
    ) -> None:
        if self.authenticator is None:
            return
        throttle = self.throttle
        result = self.authenticator.verify_request(request, now=now, lookup=self.lookup,
                                                   source=source)  # fmt: skip
        key = throttle_key(source, result.username)
        if throttle is not None and not throttle.allowed(key, now):
            retry = str(throttle.retry_after(key, now))
            raise _Refusal(make_response(request, 403, "Too Many Failed Attempts", to_tag=to_tag,
                                         headers=[("Retry-After", retry)]))  # fmt: skip
        if result.outcome is AuthOutcome.BAD_REQUEST:
            raise _Refusal(make_response(request, 400, "Bad Credentials", to_tag=to_tag))
        if result.outcome is AuthOutcome.WRONG_CREDENTIALS:
            if throttle is not None:
                throttle.record_failure(key, now)
            raise _Refusal(make_response(request, 403, "Wrong Credentials", to_tag=to_tag))
        if not result.ok:
            stale = result.outcome is AuthOutcome.STALE
            raise _Refusal(self.authenticator.challenge(request, now=now, stale=stale,
                                                        to_tag=to_tag, source=source))  # fmt: skip
        if throttle is not None:
            throttle.record_success(key)
        assert result.username is not None
        if not self.may_register(result.username, aor):
            raise _Refusal(make_response(request, 403, "Not Your AOR", to_tag=to_tag))

    def _expires_of(self, request: Request, contact: NameAddress, to_tag: str) -> int:
        value = contact.params.get("expires")
        if value is None:
            header = request.expires
            return self.default_expires if header is None else header
        if not value.isascii() or not value.isdigit():
            raise _Refusal(make_response(request, 400, "Invalid Contact Expires", to_tag=to_tag))
        return int(value) if len(value) < 12 else 2**32

    def _plan(
        self, request: Request, aor: str, source: str, now: float, to_tag: str, flow: object
    ) -> _Plan:
        plan = _Plan()
        existing = [b for b in self._bindings.get(aor, []) if not b.static]
        call_id = request.call_id
        cseq = request.cseq.number

        def out_of_order(binding: Binding) -> bool:
            return binding.call_id == call_id and (binding.cseq or 0) >= cseq

        if request.contact_is_star:
            if request.expires != 0:
                raise _Refusal(
                    make_response(request, 400, "Contact * Needs Expires 0", to_tag=to_tag)
                )
            if any(out_of_order(b) for b in existing):
                raise _Refusal(make_response(request, 500, "Out Of Order CSeq", to_tag=to_tag))
            plan.remove = existing
            return plan
        try:
            contacts = request.contacts
        except SipParseError as exc:
            raise _Refusal(make_response(request, 400, exc.reason, to_tag=to_tag)) from None
        raw = request.headers.get_all("Contact")
        user_agent = request.headers.get("User-Agent")
        # The transport it really came over, when the caller says (a browser's Via says WSS
        # even over a plain ws: connection); else what its Via says.
        transport = getattr(flow, "transport", None)
        if isinstance(transport, str):
            transport = transport.upper()
        else:
            via = (request.headers.get("Via") or "").split(None, 1)
            transport = via[0].rsplit("/", 1)[-1].upper() if via else None
        for contact, text in zip(contacts, raw, strict=True):
            if not isinstance(contact.uri, SipUri):
                raise _Refusal(
                    make_response(request, 400, "Contact Must Be A SIP URI", to_tag=to_tag)
                )
            expires = self._expires_of(request, contact, to_tag)
            if 0 < expires < self.min_expires:
                raise _Refusal(make_response(request, 423, to_tag=to_tag,
                                             headers=[("Min-Expires", str(self.min_expires))]))  # fmt: skip
            q_text = contact.params.get("q")
            try:
                q = 1.0 if q_text is None else float(q_text)
            except ValueError:
                q = -1.0
            if not 0.0 <= q <= 1.0:
                raise _Refusal(make_response(request, 400, "Invalid Contact q", to_tag=to_tag))
            expires = min(expires, self.max_expires)
            same = [b for b in existing if b.uri.equivalent(contact.uri)]
            if any(out_of_order(b) for b in same):
                raise _Refusal(make_response(request, 500, "Out Of Order CSeq", to_tag=to_tag))
            plan.remove += same
            plan.add = [b for b in plan.add if not b.uri.equivalent(contact.uri)]
            if expires > 0:
                plan.add.append(
                    Binding(aor, contact.without_param("expires"), text, now + expires, call_id,
                            cseq, q, source, now, flow, user_agent, transport,
                            tuple(request.headers.get_all("Path")))
                )  # fmt: skip
        return plan

    def _ok(self, request: Request, aor: str, now: float, to_tag: str) -> Response:
        headers: list[tuple[str, str]] = []
        for binding in self.contacts(aor, now):
            if binding.static:
                continue
            contact = binding.contact.with_param("expires", str(binding.expires_in(now)))
            headers.append(("Contact", str(contact)))
        return make_response(request, 200, to_tag=to_tag, headers=headers)
