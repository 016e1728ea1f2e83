"""API errors: an HTTP status, a stable machine id, a human message and details.

Every error the API returns has the body ``{"error": {"id": ..., "message": ..., "details":
{...}}}``. The ``id`` is stable (clients switch on it); the message is for people. Each feature
raises its own subclasses of :class:`ApiError`; core errors are mapped by :func:`from_core` (a
:class:`~baton.core.ClaimDenied` becomes 409 ``claim-denied``); anything else becomes a 500
``internal-error`` whose details carry a reference to the log line — never a traceback.
"""

from __future__ import annotations

from typing import Any

from baton.core import (
    BatonError,
    ClaimDenied,
    FlowUsageError,
    InvalidArgument,
    NotOwner,
    Preempted,
    Superseded,
    UnknownMeeting,
    UnknownUser,
)
from baton.core.port import SwitchError

__all__ = [
    "ApiError",
    "BadGateway",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "GatewayTimeout",
    "Internal",
    "NotFound",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthenticated",
    "Unprocessable",
    "error_body",
    "from_core",
]


class ApiError(Exception):
    """An error the API reports as is. Subclasses fix ``status``; ``id`` is the stable machine
    id (kebab-case), ``details`` a JSON object that helps a client act on it."""

    status = 400
    default_id = "bad-request"

    def __init__(
        self,
        message: str,
        *,
        id: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.id = id or self.default_id
        self.details = details or {}
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.id, self.message, self.details)


class BadRequest(ApiError):
    status = 400
    default_id = "bad-request"


class Unauthenticated(ApiError):
    """No valid session or token: log in (``POST /api/login``) or send ``Authorization: Bearer``."""

    status = 401
    default_id = "unauthenticated"

    def __init__(self, message: str = "log in first, or send an API token", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="baton"'})
        super().__init__(message, **kw)


class Forbidden(ApiError):
    """Authenticated, but the role does not allow it."""

    status = 403
    default_id = "forbidden"


class NotFound(ApiError):
    status = 404
    default_id = "not-found"


class Conflict(ApiError):
    """The core refused: the state of the users does not allow it now."""

    status = 409
    default_id = "conflict"


class Unprocessable(ApiError):
    """Bad arguments; ``details.field`` names the field."""

    status = 422
    default_id = "invalid-argument"


class TooManyRequests(ApiError):
    status = 429
    default_id = "too-many-requests"


class Internal(ApiError):
    status = 500
    default_id = "internal-error"


class BadGateway(ApiError):
    """The switch failed the command."""

    status = 502
    default_id = "switch-error"


class GatewayTimeout(ApiError):
    """A running flow did not answer in time."""

    status = 504
    default_id = "timeout"


class ServiceUnavailable(ApiError):
    status = 503
    default_id = "service-unavailable"


def error_body(id: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"id": id, "message": message, "details": details or {}}}


def from_core(exc: BatonError | SwitchError, **details: Any) -> ApiError:
    """The API error for a core error: 404 for unknown users and meetings, 422
    ``invalid-argument`` for arguments a flow cannot work with (``details.field`` names the
    argument: ``args.message``), 409 for conflicts (the core's ``code`` is the id), 502 for a
    switch failure."""
    code = getattr(exc, "code", "baton-error")
    if isinstance(exc, UnknownUser):
        return NotFound(str(exc), id=code, details={"user": exc.user_id, **details})
    if isinstance(exc, UnknownMeeting):
        return NotFound(str(exc), id=code, details={"meeting": exc.meeting_id, **details})
    if isinstance(exc, ClaimDenied):
        return Conflict(
            str(exc),
            id=code,
            details={
                "user": exc.user.id,
                "holder": exc.holder,
                "holder_priority": exc.holder_priority,
                "priority": exc.priority,
                **details,
            },
        )
    if isinstance(exc, NotOwner):
        return Conflict(str(exc), id=code, details={"user": exc.user.id, "holder": exc.holder})
    if isinstance(exc, Superseded | Preempted):
        return Conflict(str(exc), id=code, details={"user": exc.user.id, **details})
    if isinstance(exc, InvalidArgument):
        field = "args" if exc.argument is None else f"args.{exc.argument}"
        return Unprocessable(str(exc), id=code, details={"field": field, **details})
    if isinstance(exc, FlowUsageError):
        return Conflict(str(exc), id=code, details=details)
    if isinstance(exc, SwitchError):
        return BadGateway(str(exc), id=code, details=details)
    return Conflict(str(exc), id=code, details=details)
