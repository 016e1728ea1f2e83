"""HTTP Digest authentication for SIP (RFC 7616, RFC 2617, RFC 8760; RFC 3261 §22).

Rules
-----
* **Server side is stateless about nonces.** A nonce is ``base64url(time ‖ salt ‖
  HMAC-SHA256(secret, time ‖ salt))``: the server recognises its own nonces and their age
  without storing them. A nonce older than ``nonce_lifetime`` (or not ours — a restart with a
  new secret) is *stale*: if the digest was right for it, the client is re-challenged with
  ``stale=true`` and retries without asking its user for the password again.
* **Nonces are bound to the client's address.** The HMAC also covers the source IP the
  challenge was sent to (``source=``); a nonce answered from another address is not ours. A
  response on a nonce that is not ours is *stale* whatever its digest (a new challenge, no
  failure counted): someone forging a phone's source address never receives the challenges
  sent there, so cannot make failures count against that address (docs/sip.md, "Digest
  failures").
* **The credentials must match the request**: a ``uri`` that is not the Request-URI, or
  credentials that are not UTF-8, are ``BAD_REQUEST`` (400), never a traceback.
* **Replay protection** is the one piece of state: for each nonce in use, the highest
  nonce-count seen. A request whose ``nc`` does not increase is a replay and is answered as
  stale. Entries leave with their nonce's lifetime (and the table is bounded).
* **Constant-time comparison** of digests (:func:`hmac.compare_digest`).
* **Results are values.** :meth:`DigestAuthenticator.verify` returns an :class:`AuthResult`:
  ``OK``, ``MISSING`` (no credentials for our realm), ``STALE``, ``WRONG_CREDENTIALS``
  (unknown user or wrong password: the two are indistinguishable on purpose), ``MALFORMED``
  or ``BAD_REQUEST``. The caller maps them: challenge (401/407) for MISSING/STALE/MALFORMED,
  403 for wrong credentials — and feeds wrong credentials to its throttle — and 400 for
  BAD_REQUEST.
* Time is an input (``now``, seconds on any monotonic clock); nothing here reads a clock.
* MD5 and SHA-256 (and their ``-sess`` variants) with ``qop=auth`` (``auth-int`` verified too);
  a response without ``qop`` (RFC 2069) is accepted once per nonce.

Theory of operation
-------------------
The server offers one challenge per algorithm in its configured order (RFC 8760 §2.4; MD5
first by default, for the clients that read only the first), all with the same nonce and opaque. The client answers the first it supports; the server recomputes
the response from the password (or a stored HA1 for that algorithm) and compares. The client
side (:class:`DigestClient`) does the reverse for outbound registration and for tests.
"""

from __future__ import annotations

import base64
import collections
import enum
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ._grammar import Scanner
from .errors import SipParseError
from .message import Request, Response, make_response, new_tag
from .uri import SipUri, parse_uri

__all__ = [
    "HA1",
    "AuthOutcome",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAuthenticator",
    "DigestClient",
    "Password",
    "Secret",
    "build_authorization",
    "compute_ha1",
    "parse_challenge",
    "parse_credentials",
]

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}


def _hash_for(algorithm: str) -> Callable[[bytes], str] | None:
    base = algorithm.upper().removesuffix("-SESS")
    return _HASHES.get(base)


def _base(algorithm: str) -> str:
    return algorithm.upper().removesuffix("-SESS")


def _h(algorithm: str, text: str) -> str:
    hasher = _hash_for(algorithm)
    assert hasher is not None
    return hasher(text.encode("utf-8"))


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """``H(username:realm:password)`` — what a user database may store instead of passwords."""
    return _h(algorithm, f"{username}:{realm}:{password}")


# ---- secrets -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Password:
    """A user's clear-text password."""

    value: str


@dataclass(frozen=True, slots=True)
class HA1:
    """Stored ``H(username:realm:password)`` values, one per algorithm (hex)."""

    md5: str | None = None
    sha256: str | None = None

    def for_algorithm(self, algorithm: str) -> str | None:
        return self.md5 if _base(algorithm) == "MD5" else self.sha256


Secret = Password | HA1
"""What a credentials lookup returns for a username (``None`` for an unknown user)."""


# ---- header values -----------------------------------------------------------------------


def _parse_auth_params(value: str, what: str) -> tuple[str, dict[str, str]]:
    """``scheme k=v, k="v", …`` → (scheme, {lower-case name: unquoted value})."""
    s = Scanner(value.strip(" \t"), what)
    scheme = s.token("authentication scheme")
    params: dict[str, str] = {}
    if not s.skip_ws():
        if s.at_end():
            return scheme, params
        raise s.error("expected white space after the scheme")
    while not s.at_end():
        name = s.token("parameter name").lower()
        s.skip_ws()
        s.expect("=")
        s.skip_ws()
        if s.peek() == '"':
            param_value = s.quoted_string()
        else:
            param_value = s.take_until(", \t")
            if not param_value:
                raise s.error(f"empty value for {name!r}")
        if name in params:
            raise s.error(f"parameter {name!r} given twice")
        params[name] = param_value
        s.skip_ws()
        if s.at_end():
            break
        s.expect(",")
        s.skip_ws()
    return scheme, params


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    opaque: str | None = None
    qop: tuple[str, ...] = ("auth",)
    stale: bool = False

    def header_value(self) -> str:
        parts = [f"realm={_quoted(self.realm)}", f"nonce={_quoted(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quoted(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quoted(','.join(self.qop))}")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    """Parse a Digest challenge. Raises :class:`SipParseError` on a non-Digest or bad one."""
    scheme, params = _parse_auth_params(value, "WWW-Authenticate")
    if scheme.lower() != "digest":
        raise SipParseError(f"Unsupported authentication scheme {scheme!r}")
    if "realm" not in params or "nonce" not in params:
        raise SipParseError("Malformed WWW-Authenticate: realm and nonce are required")
    qop = tuple(q.strip() for q in params["qop"].split(",") if q.strip()) if "qop" in params else ()
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5"),
        opaque=params.get("opaque"),
        qop=qop,
        stale=params.get("stale", "").lower() == "true",
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """A parsed ``Authorization`` / ``Proxy-Authorization`` Digest header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    userhash: bool = False


def parse_credentials(value: str) -> Credentials:
    """Parse Digest credentials. Raises :class:`SipParseError` if they are not usable."""
    scheme, params = _parse_auth_params(value, "Authorization")
    if scheme.lower() != "digest":
        raise SipParseError(f"Unsupported authentication scheme {scheme!r}")
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
    if missing:
        raise SipParseError(f"Malformed Authorization: missing {', '.join(missing)}")
    qop = params.get("qop")
    if qop is not None:
        if qop not in ("auth", "auth-int"):
            raise SipParseError(f"Malformed Authorization: unsupported qop {qop!r}")
        nc = params.get("nc", "")
        if len(nc) != 8 or not all(c in "0123456789abcdefABCDEF" for c in nc):
            raise SipParseError("Malformed Authorization: bad nc")
        if not params.get("cnonce"):
            raise SipParseError("Malformed Authorization: missing cnonce")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=params.get("algorithm", "MD5"),
        opaque=params.get("opaque"),
        qop=qop,
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        userhash=params.get("userhash", "").lower() == "true",
    )


def _response(
    ha1: str,
    *,
    algorithm: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes,
) -> str:
    if algorithm.upper().endswith("-SESS"):
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce or ''}")
    if qop == "auth-int":
        hasher = _hash_for(algorithm)
        assert hasher is not None
        ha2 = _h(algorithm, f"{method}:{uri}:{hasher(body)}")
    else:
        ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


def build_authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``Authorization`` value answering ``challenge`` (the client side of RFC 7616)."""
    if _hash_for(challenge.algorithm) is None:
        raise SipParseError(f"Unsupported digest algorithm {challenge.algorithm!r}")
    qop = (
        "auth" if "auth" in challenge.qop else ("auth-int" if "auth-int" in challenge.qop else None)
    )
    nc_text = f"{nc:08x}"
    cnonce = cnonce or os.urandom(8).hex()
    ha1 = compute_ha1(username, challenge.realm, password, challenge.algorithm)
    digest = _response(
        ha1, algorithm=challenge.algorithm, nonce=challenge.nonce, method=method,
        uri=uri, qop=qop, nc=nc_text, cnonce=cnonce, body=body,
    )  # fmt: skip
    parts = [
        f"username={_quoted(username)}",
        f"realm={_quoted(challenge.realm)}",
        f"nonce={_quoted(challenge.nonce)}",
        f"uri={_quoted(uri)}",
        f"response={_quoted(digest)}",
        f"algorithm={challenge.algorithm}",
    ]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quoted(challenge.opaque)}")
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quoted(cnonce)}"]
    return "Digest " + ", ".join(parts)


# ---- the server --------------------------------------------------------------------------


class AuthOutcome(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge
    STALE = "stale"  # right digest, old or replayed nonce: challenge with stale=true
    WRONG_CREDENTIALS = "wrong-credentials"  # unknown user or wrong password: 403
    MALFORMED = "malformed"  # unusable credentials: challenge
    BAD_REQUEST = "bad-request"  # credentials that cannot be for this request: 400


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    username: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


_NONCE_BYTES = 8 + 8 + 16


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    """Whether the digest ``uri`` names the Request-URI: the same text, an equivalent URI
    (RFC 3261 §19.1.4), or the Request-URI without its user part — SIPp 3.6 writes
    ``sip:HOST:PORT`` for ``sip:USER@HOST:PORT``. The method is in the digest too, so a
    digest made for one request cannot serve another method or another host."""
    if digest_uri == request_uri:
        return True
    try:
        theirs, ours = parse_uri(digest_uri), parse_uri(request_uri)
    except SipParseError:
        return False
    if theirs.equivalent(ours):
        return True
    return (
        isinstance(theirs, SipUri)
        and isinstance(ours, SipUri)
        and theirs.user is None
        and (theirs.scheme, theirs.host.lower(), theirs.port)
        == (ours.scheme, ours.host.lower(), ours.port)
    )


class DigestAuthenticator:
    """Issues Digest challenges and verifies credentials for one realm (RFC 7616).

    ``secret`` keys the nonce HMAC (keep it for the life of the process, or across restarts
    to keep outstanding nonces valid). ``algorithms`` are offered in this order.

    The default offers MD5 *first*: RFC 8760 asks for the preferred algorithm first, but
    deployed clients answer only the first challenge and many know only MD5 (SIPp 3.6.1
    fails outright on a SHA-256 first challenge: "authentication must use MD5"). Put
    ``"SHA-256"`` first where every phone supports it.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        algorithms: tuple[str, ...] = ("MD5", "SHA-256"),
        nonce_lifetime: float = 300.0,
        max_tracked_nonces: int = 100_000,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        for algorithm in algorithms:
            if _hash_for(algorithm) is None:
                raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        self.realm = realm
        self._secret = secret
        self.algorithms = algorithms
        self.nonce_lifetime = nonce_lifetime
        self._max_tracked = max_tracked_nonces
        self._random = random_bytes
        self.opaque = hmac.new(secret, b"opaque:" + realm.encode(), "sha256").hexdigest()[:16]
        # nonce -> (issued at, highest nc seen); insertion order is issue order, roughly.
        self._seen: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()

    # -- nonces
    def new_nonce(self, now: float, source: str = "") -> str:
        """A fresh nonce for a challenge sent to ``source`` (the client's IP address)."""
        stamp = struct.pack(">q", int(now * 1000)) + self._random(8)
        mac = hmac.new(self._secret, stamp + source.encode(), "sha256").digest()[:16]
        return base64.urlsafe_b64encode(stamp + mac).decode().rstrip("=")

    def _nonce_time(self, nonce: str, source: str = "") -> float | None:
        """When we issued ``nonce`` to ``source``, or ``None`` if it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        stamp, mac = raw[:16], raw[16:]
        expected = hmac.new(self._secret, stamp + source.encode(), "sha256").digest()[:16]
        if not hmac.compare_digest(mac, expected):
            return None
        (millis,) = struct.unpack(">q", stamp[:8])
        return float(millis) / 1000.0

    def challenges(self, now: float, *, stale: bool = False, source: str = "") -> list[Challenge]:
        """One challenge per algorithm, most preferred first, sharing one fresh nonce (bound
        to ``source``, the address the challenge is sent to)."""
        nonce = self.new_nonce(now, source)
        return [
            Challenge(self.realm, nonce, algorithm, self.opaque, ("auth",), stale)
            for algorithm in self.algorithms
        ]

    def challenge(
        self,
        request: Request,
        *,
        now: float,
        stale: bool = False,
        proxy: bool = False,
        to_tag: str | None = None,
        source: str = "",
    ) -> Response:
        """A 401 (or 407 when ``proxy``) response carrying our challenges, for a client at
        ``source``."""
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        challenges = self.challenges(now, stale=stale, source=source)
        return make_response(
            request,
            407 if proxy else 401,
            to_tag=to_tag or new_tag(),
            headers=[(header, c.header_value()) for c in challenges],
        )

    # -- verification
    def verify_request(
        self,
        request: Request,
        *,
        now: float,
        lookup: Callable[[str], Secret | None],
        proxy: bool = False,
        source: str = "",
    ) -> AuthResult:
        """Verify the request's Authorization (or Proxy-Authorization) for our realm, sent
        from ``source`` (the client's IP address)."""
        header = "Proxy-Authorization" if proxy else "Authorization"
        values = request.headers.get_all(header)
        if not values:
            return AuthResult(AuthOutcome.MISSING, reason=f"no {header} header")
        result = AuthResult(AuthOutcome.MISSING, reason=f"no credentials for realm {self.realm!r}")
        for value in values:
            attempt = self.verify(value, method=request.method, now=now, lookup=lookup,
                                  body=request.body, request_uri=str(request.uri),
                                  source=source)  # fmt: skip
            if attempt.outcome is not AuthOutcome.MISSING:
                return attempt
            result = attempt
        return result

    def verify(
        self,
        value: str,
        *,
        method: str,
        now: float,
        lookup: Callable[[str], Secret | None],
        body: bytes = b"",
        request_uri: str | None = None,
        source: str = "",
    ) -> AuthResult:
        """Verify one Authorization header value. See the module docstring for outcomes.
        ``request_uri``: the request's Request-URI, which the credentials' ``uri`` must be;
        ``source``: the client's IP address, which the nonce must have been issued to."""
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return AuthResult(AuthOutcome.BAD_REQUEST, reason="credentials are not UTF-8")
        try:
            credentials = parse_credentials(value)
        except SipParseError as exc:
            return AuthResult(AuthOutcome.MALFORMED, reason=exc.reason)
        username = credentials.username
        if credentials.realm != self.realm:
            return AuthResult(AuthOutcome.MISSING, username, "credentials for another realm")
        if request_uri is not None and not _same_uri(credentials.uri, request_uri):
            return AuthResult(AuthOutcome.BAD_REQUEST, username, "uri is not the Request-URI")
        if credentials.algorithm.upper() not in {a.upper() for a in self.algorithms} | {
            a.upper() + "-SESS" for a in self.algorithms
        }:
            return AuthResult(AuthOutcome.MALFORMED, username, "unsupported algorithm")
        if credentials.userhash:
            return AuthResult(AuthOutcome.MALFORMED, username, "userhash is not supported")
        if credentials.opaque is not None and not hmac.compare_digest(
            credentials.opaque.encode(), self.opaque.encode()
        ):
            return AuthResult(AuthOutcome.MALFORMED, username, "opaque does not match")
        issued = self._nonce_time(credentials.nonce, source)
        if issued is None:  # not a nonce we sent to this address: say nothing of the digest
            return AuthResult(AuthOutcome.STALE, username, "nonce not ours")
        expected = self._expected(credentials, lookup(username), method, body)
        if expected is None or not hmac.compare_digest(
            expected.encode(), credentials.response.encode()
        ):
            return AuthResult(AuthOutcome.WRONG_CREDENTIALS, username, "wrong credentials")
        if not (issued - 1.0 <= now <= issued + self.nonce_lifetime):
            return AuthResult(AuthOutcome.STALE, username, "nonce expired or not ours")
        count = int(credentials.nc, 16) if credentials.nc is not None else 1
        self._forget_expired(now)
        seen = self._seen.get(credentials.nonce)
        if seen is not None and count <= seen[1]:
            return AuthResult(AuthOutcome.STALE, username, "nonce count did not increase")
        self._seen[credentials.nonce] = (issued, count)
        if len(self._seen) > self._max_tracked:
            self._seen.popitem(last=False)
        return AuthResult(AuthOutcome.OK, username)

    def _expected(
        self, credentials: Credentials, secret: Secret | None, method: str, body: bytes
    ) -> str | None:
        algorithm = credentials.algorithm
        if secret is None:
            return None
        if isinstance(secret, Password):
            ha1 = compute_ha1(credentials.username, self.realm, secret.value, algorithm)
        else:
            stored = secret.for_algorithm(algorithm)
            if stored is None:
                return None
            ha1 = stored.lower()
        return _response(
            ha1, algorithm=algorithm, nonce=credentials.nonce, method=method,
            uri=credentials.uri, qop=credentials.qop, nc=credentials.nc,
            cnonce=credentials.cnonce, body=body,
        )  # fmt: skip

    def _forget_expired(self, now: float) -> None:
        horizon = now - self.nonce_lifetime
        while self._seen:
            nonce, (issued, _) = next(iter(self._seen.items()))
            if issued >= horizon:
                break
            del self._seen[nonce]


# ---- the client --------------------------------------------------------------------------


class DigestClient:
    """Answers 401/407 challenges for one set of credentials (outbound REGISTER, tests).

    Keeps the nonce-count per nonce so that reusing a nonce increments ``nc``.
    """

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self._counts: dict[str, int] = {}

    def authorize(self, request: Request, challenge_response: Response) -> Request:
        """A copy of ``request`` carrying credentials for ``challenge_response``'s challenge.

        The caller increments CSeq and sends it in a new transaction. Raises
        :class:`SipParseError` if no challenge there can be answered.
        """
        proxy = challenge_response.status == 407
        source = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        target = "Proxy-Authorization" if proxy else "Authorization"
        for value in challenge_response.headers.get_all(source):
            try:
                challenge = parse_challenge(value)
            except SipParseError:
                continue
            if _hash_for(challenge.algorithm) is None:
                continue
            count = self._counts.get(challenge.nonce, 0) + 1
            self._counts[challenge.nonce] = count
            header = build_authorization(
                challenge, username=self.username, password=self.password,
                method=request.method, uri=str(request.uri), nc=count, body=request.body,
            )  # fmt: skip
            copy = Request(request.method, request.uri, request.headers.copy(), request.body)
            copy.headers.remove(target)
            copy.headers.add(target, header)
            return copy
        raise SipParseError(f"no usable Digest challenge in {source}")
