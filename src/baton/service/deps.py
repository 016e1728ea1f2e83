"""FastAPI dependencies shared by the features: the service, the caller's principal.

Credentials, in order: ``Authorization: Bearer <token>`` (API tokens, and sessions used from
scripts), then the ``baton_session`` cookie (the console). A cookie-authenticated request that
changes something must come from the console's own origin: the cookie is ``SameSite=Strict``
already, and an ``Origin`` header naming another site is refused as well (403 ``bad-origin``).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, WebSocket

from baton.service.auth.permissions import Principal
from baton.service.errors import Forbidden, Unauthenticated
from baton.service.runtime import Service

__all__ = [
    "SESSION_COOKIE",
    "Authed",
    "Svc",
    "authenticate_websocket",
    "client_address",
    "current_principal",
    "get_service",
    "metrics_access",
    "optional_principal",
]

SESSION_COOKIE = "baton_session"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def client_address(request: Request | WebSocket) -> str | None:
    return request.client.host if request.client else None


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'", id="bad-token")
    return token.strip()


def _same_origin(origin: str, host: str | None) -> bool:
    if not host:
        return False
    return origin.split("://", 1)[-1].rstrip("/") == host


async def current_principal(request: Request) -> Principal:
    """The authenticated caller; 401 otherwise."""
    service = get_service(request)
    token = _bearer(request.headers.get("authorization"))
    via = "token"
    if token is None:
        token = request.cookies.get(SESSION_COOKIE)
        via = "session"
        if token is None:
            raise Unauthenticated()
        origin = request.headers.get("origin")
        if (
            request.method not in _SAFE
            and origin is not None
            and not _same_origin(origin, request.headers.get("host"))
        ):
            raise Forbidden(
                "cross-site request refused", id="bad-origin", details={"origin": origin}
            )
    principal = await service.auth.authenticate(token, via=via)
    request.state.principal = principal
    return principal


async def optional_principal(request: Request) -> Principal | None:
    """The caller if it sent valid credentials, else ``None`` (for pages open to anyone that
    show more to a logged-in user)."""
    try:
        return await current_principal(request)
    except (Unauthenticated, Forbidden):
        return None


async def metrics_access(request: Request) -> None:
    """``/metrics`` needs credentials: the configured scrape token (``[api] metrics_token``,
    compared in constant time) or any user's session or API token; 401 otherwise."""
    scrape = get_service(request).config.api.metrics_token
    token = _bearer(request.headers.get("authorization"))
    if (
        scrape is not None
        and token is not None
        and hmac.compare_digest(token.encode(), scrape.encode())
    ):
        return
    await current_principal(request)


async def authenticate_websocket(ws: WebSocket, service: Service) -> Principal:
    """The principal of a WebSocket: a bearer header, a ``token`` query parameter, or the
    session cookie (with an ``Origin`` of this host — a browser always sends one)."""
    token = _bearer(ws.headers.get("authorization"))
    via = "token"
    if token is None:
        token = ws.query_params.get("token")
    if token is None:
        token = ws.cookies.get(SESSION_COOKIE)
        via = "session"
        origin = ws.headers.get("origin")
        if (
            token is not None
            and origin is not None
            and not _same_origin(origin, ws.headers.get("host"))
        ):
            raise Forbidden("cross-site WebSocket refused", id="bad-origin")
    if token is None:
        raise Unauthenticated()
    return await service.auth.authenticate(token, via=via)


Svc = Annotated[Service, Depends(get_service)]
Authed = Annotated[Principal, Depends(current_principal)]
