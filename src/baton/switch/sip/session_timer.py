"""Session timers (RFC 4028), sans-IO: how a dialog notices that the phone at the other end
died without hanging up.

Rules
-----
* Negotiated on the INVITE and its 2xx: ``Session-Expires: <seconds>[;refresher=uac|uas]``,
  ``Min-SE`` and the ``timer`` option tag. An interval below our Min-SE is refused with
  422 Session Interval Too Small carrying our Min-SE (:func:`negotiate_uas`); a UAC that gets
  a 422 retries with the Min-SE it was given (:func:`retry_interval`).
* The refresher sends a session refresh (re-INVITE or UPDATE) every half interval
  (:meth:`SessionTimer.refresh_at`); the other side ends the dialog with BYE when no refresh
  came by ``interval - min(32, interval / 3)`` (:meth:`SessionTimer.expire_at`, §10).
* If the UAC did not say ``Supported: timer``, the UAS must be the refresher (§9).
* Time is an input: deadlines are computed from the ``since`` the caller gives (the time of the
  last 2xx to an INVITE/UPDATE), never read from a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._grammar import Scanner, parse_params
from .errors import SipParseError
from .message import Message, Request, Response, make_response, new_tag

__all__ = [
    "SessionTimer",
    "negotiate_uac",
    "negotiate_uas",
    "request_headers",
    "retry_interval",
]


@dataclass(frozen=True, slots=True)
class SessionTimer:
    """A negotiated session timer, from our side of the dialog."""

    interval: int  # seconds (Session-Expires)
    we_refresh: bool  # True: we send the refreshes; False: we watch for them

    def refresh_at(self, since: float) -> float | None:
        """When we must send the next refresh (half the interval), if we are the refresher."""
        return since + self.interval / 2 if self.we_refresh else None

    def expire_at(self, since: float) -> float:
        """When the session is dead if no refresh arrived (RFC 4028 §10): send BYE then."""
        return since + self.interval - min(32.0, self.interval / 3)


def _session_expires(message: Message) -> tuple[int, str | None] | None:
    value = message.headers.get("Session-Expires")
    if value is None:
        return None
    scanner = Scanner(value.strip(), "Session-Expires")
    digits = scanner.take_while(frozenset("0123456789"))
    if not digits or len(digits) > 9:
        raise SipParseError("Malformed Session-Expires header")
    params = parse_params(scanner)
    refresher = params.get("refresher")
    if refresher is not None:
        refresher = refresher.lower()
        if refresher not in ("uac", "uas"):
            raise SipParseError("Malformed Session-Expires refresher")
    return int(digits), refresher


def _supports_timer(message: Message) -> bool:
    return any(tag.lower() == "timer" for tag in message.headers.get_all("Supported"))


def request_headers(interval: int = 1800, min_se: int = 90) -> list[tuple[str, str]]:
    """Headers for an INVITE we send that asks for a session timer (the refresher is left to
    the UAS, which may pick us)."""
    return [("Supported", "timer"), ("Session-Expires", str(interval)), ("Min-SE", str(min_se))]


def negotiate_uas(
    request: Request, *, min_se: int = 90, preferred: int = 1800
) -> tuple[SessionTimer, list[tuple[str, str]]] | Response:
    """As UAS, settle the session timer of an INVITE we are about to answer with 2xx.

    Returns the timer and the headers to put in the 2xx, or the 422 to send instead (or a
    400 for a malformed Session-Expires).
    """
    try:
        offered = _session_expires(request)
    except SipParseError as exc:
        return make_response(request, 400, exc.reason, to_tag=new_tag())
    uac_supports = _supports_timer(request)
    if offered is None:
        interval, refresher = max(preferred, min_se), None
    else:
        interval, refresher = offered
        if interval < min_se:
            return make_response(request, 422, to_tag=new_tag(), headers=[("Min-SE", str(min_se))])
    if refresher is None or not uac_supports:
        refresher = "uac" if uac_supports else "uas"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if refresher == "uac":
        headers.append(("Require", "timer"))
    return SessionTimer(interval, we_refresh=refresher == "uas"), headers


def negotiate_uac(response: Response) -> SessionTimer | None:
    """As UAC, read the session timer the 2xx to our INVITE settled (``None``: no timer).

    A 2xx without ``refresher`` leaves the refreshing to us (RFC 4028 §7.4). Raises
    :class:`SipParseError` for a malformed Session-Expires.
    """
    settled = _session_expires(response)
    if settled is None:
        return None
    interval, refresher = settled
    return SessionTimer(interval, we_refresh=refresher != "uas")


def retry_interval(response: Response) -> int | None:
    """After a 422, the Session-Expires to retry the INVITE with (its Min-SE)."""
    if response.status != 422:
        return None
    value = (response.headers.get("Min-SE") or "").split(";", 1)[0].strip()
    return int(value) if value.isdigit() and len(value) < 10 else None
