"""The UAS's first look at a new request (RFC 3261 §8.2), sans-IO.

Rules
-----
:func:`check_request` returns the error response a UAS must send before it processes a
request, or ``None`` when the request may go on to the TU. The checks run in the RFC's order,
and the first failing one answers:

1. **Method** (§8.2.1): a method we do not know → 501 Not Implemented; one we know but do not
   allow → 405 Method Not Allowed. Both carry ``Allow``.
2. **Request-URI scheme** (§8.2.2.1): not ``sip:``/``sips:`` → 416 Unsupported URI Scheme.
3. **Max-Forwards** (§16.3 step 3, for a B2BUA that will place a new leg): 0 on anything but
   OPTIONS → 483 Too Many Hops. OPTIONS with 0 is answered normally (RFC 3261 §11).
4. **Require** (§8.2.2.3): an option tag we do not support → 420 Bad Extension with
   ``Unsupported``. ``Proxy-Require`` is for proxies and ignored here. Not for ACK/CANCEL.
5. **Body** (§8.2.3): a Content-Type or Content-Encoding we do not understand → 415 with
   ``Accept`` / ``Accept-Encoding``.
6. **Accept** (§8.2.3 / RFC 4475 ``sdp01``): an INVITE whose Accept excludes SDP cannot get an
   answer we can write → 406 Not Acceptable.

Theory of operation
-------------------
The policy (:class:`UasPolicy`) says what Baton implements; the function is pure. ACK is never
answered, so ``check_request`` returns ``None`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import Request, Response, make_response, new_tag
from .uri import SipUri

__all__ = ["KNOWN_METHODS", "UasPolicy", "check_request"]

KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER",  # RFC 3261
        "INFO", "PRACK", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class UasPolicy:
    """What this UAS implements."""

    allowed: frozenset[str] = frozenset(
        {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "INFO", "UPDATE"}
    )
    supported: frozenset[str] = frozenset()  # option tags (Require)
    accept: frozenset[str] = frozenset({"application/sdp", "application/dtmf-relay"})
    forwards: bool = True  # we place new legs for requests: honour Max-Forwards

    @property
    def allow_header(self) -> str:
        return ", ".join(sorted(self.allowed))


_DEFAULT = UasPolicy()


def _accepts_sdp(values: list[str]) -> bool:
    for value in values:
        media = value.split(";", 1)[0].strip().lower()
        if media in ("application/sdp", "application/*", "*/*"):
            return True
    return False


def check_request(
    request: Request, policy: UasPolicy | None = None, *, to_tag: str | None = None
) -> Response | None:
    """The error response ``request`` must get before any processing, or ``None``."""
    policy = policy or _DEFAULT
    if request.method == "ACK":
        return None

    def refuse(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
        # The tag is drawn only for a refusal: most requests pass, and a tag costs a read of
        # the system's random source.
        return make_response(request, status, to_tag=to_tag or new_tag(), headers=headers or [])

    if request.method not in policy.allowed:
        status = 405 if request.method in KNOWN_METHODS else 501
        return refuse(status, [("Allow", policy.allow_header)])
    if not isinstance(request.uri, SipUri):
        return refuse(416)
    if policy.forwards and request.max_forwards == 0 and request.method != "OPTIONS":
        return refuse(483)
    if request.method != "CANCEL":
        unsupported = [o for o in request.headers.get_all("Require") if o not in policy.supported]
        if unsupported:
            return refuse(420, [("Unsupported", o) for o in unsupported])
    if request.body:
        content_type = request.content_type
        if content_type is None or content_type not in policy.accept:
            return refuse(415, [("Accept", ", ".join(sorted(policy.accept)))])
        encodings = [e.lower() for e in request.headers.get_all("Content-Encoding")]
        if any(e != "identity" for e in encodings):
            return refuse(415, [("Accept-Encoding", "identity")])
    accept = request.headers.get_all("Accept")
    if request.method == "INVITE" and accept and not _accepts_sdp(accept):
        return refuse(406)
    return None
