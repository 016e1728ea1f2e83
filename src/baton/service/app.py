"""The HTTP application: the API, the WebSocket stream, ``/metrics`` and the console, in one ASGI
app around one :class:`~baton.service.runtime.Service`.

Error contract: every error response has the body ``{"error": {"id", "message", "details"}}``.
401 unauthenticated, 403 unauthorised, 404 unknown ids, 409 core conflicts (the core's ``code``),
413 too large, 422 bad arguments (``details.field`` names the field), 429 throttled, 5xx
service-side. An unexpected exception answers 500 ``internal-error`` with a reference to the log
line and never takes the server down.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from baton import __version__
from baton.core import BatonError
from baton.core.port import SwitchError
from baton.service.auth.permissions import Principal
from baton.service.auth.resource import router as auth_router
from baton.service.config import format_loc
from baton.service.deps import current_principal, metrics_access, optional_principal
from baton.service.errors import ApiError, NotFound, error_body, from_core
from baton.service.events.resource import router as events_router
from baton.service.flows.resource import router as flows_router
from baton.service.meetings.resource import router as meetings_router
from baton.service.positions.resource import router as positions_router
from baton.service.provision.resource import router as provision_router
from baton.service.records.resource import router as records_router
from baton.service.runtime import Service
from baton.service.sim.resource import router as sim_router
from baton.service.store import StoreUnavailable
from baton.service.users.resource import router as users_router
from baton.service.voicelog.resource import router as voicelog_router
from baton.switch.sip import SipSwitch

#: Swagger UI's files, shipped by the swagger-ui-py package (found, not imported: only its
#: static folder is used).
_swagger_spec = importlib.util.find_spec("swagger_ui")
SWAGGER_UI = (
    Path(
        next(iter(_swagger_spec.submodule_search_locations or []))
        if _swagger_spec is not None
        else "."
    )
    / "static"
)

__all__ = ["CONSOLE", "MAX_BODY", "create_app"]

log = logging.getLogger("baton.service.http")
access = logging.getLogger("baton.service.access")

#: The console's static files (vanilla HTML, CSS and JS; no build step).
CONSOLE = Path(__file__).with_name("console")
#: The largest request body accepted (bytes).
MAX_BODY = 1 << 20

_STATUS_IDS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "too-large",
    415: "unsupported-media-type",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(ApiError):
    status = 413
    default_id = "too-large"


class _Edge:
    """Pure ASGI middleware: a request id, the body size limit, metrics and the access log."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            err = _TooLarge(f"the request body is larger than {MAX_BODY} bytes")
            await JSONResponse(err.body(), status_code=err.status)(scope, receive, send)
            self._log(scope, 413, started, request_id)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > MAX_BODY:
                    raise _TooLarge(f"the request body is larger than {MAX_BODY} bytes")
            return msg

        async def sending(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
                msg.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(msg)

        try:
            await self.app(scope, limited, sending)
        finally:
            self._log(scope, status, started, request_id)

    def _log(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        seconds = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "(unmatched)"
        self.service.metrics.http(scope.get("method", "?"), template, status, seconds)
        principal = scope.get("state", {}).get("principal")
        access.info(
            "%s %s %d",
            scope.get("method"),
            scope.get("path"),
            status,
            extra={
                "request_id": request_id,
                "status": status,
                "ms": round(seconds * 1000, 1),
                "principal": getattr(principal, "user_id", None),
            },
        )


def _validation_body(exc: RequestValidationError) -> dict[str, Any]:
    errors = []
    for e in exc.errors():
        loc = tuple(e.get("loc", ()))
        where = loc[0] if loc else "body"
        field = format_loc(loc[1:]) if len(loc) > 1 else str(where)
        if e.get("type") == "json_invalid":
            field = "body"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if not msg[1:2].isupper():  # "Field required" → "field required"; "JSON …" stays
            msg = msg[:1].lower() + msg[1:]
        errors.append({"field": field, "in": where, "message": msg, "type": e.get("type")})
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    return error_body(
        "invalid-request",
        f"{first['field']}: {first['message']}",
        {"field": first["field"], "errors": errors},
    )


def create_app(service: Service, *, manage_lifecycle: bool = True) -> FastAPI:
    """The ASGI app. With ``manage_lifecycle`` the app starts and stops the service (uvicorn's
    lifespan); without, the caller does."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await service.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await service.stop()

    app = FastAPI(
        title="Baton dispatcher service",
        version=__version__,
        description=(
            "Users with live state, flows in progress, the flow library, meetings, call records, "
            "recordings and the event stream of a Baton dispatch centre. Log in with "
            "`POST /api/login` (a session cookie) or send `Authorization: Bearer <token>`."
        ),
        lifespan=lifespan,
        # /docs is served below from local assets: a dispatch centre's network may be isolated.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
            # Swagger UI would otherwise ask validator.swagger.io about the schema.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(exc), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # The framework's "error parsing the body": JSON it could not read for another
            # reason than its syntax (nested too deeply, a number too long). A bad body is a
            # 422 invalid-request naming the body, like a JSON syntax error (docs/service.md).
            message = "body: unreadable JSON (nested too deeply, or a number too long)"
            return JSONResponse(
                error_body("invalid-request", message, {"field": "body"}), status_code=422
            )
        ident = _STATUS_IDS.get(exc.status_code, f"http-{exc.status_code}")
        message = str(exc.detail) if exc.detail else ident
        return JSONResponse(
            error_body(ident, message, {"path": request.url.path}),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse(error_body(exc.code, str(exc)), status_code=503)

    @app.exception_handler(BatonError)
    async def core_error(request: Request, exc: BatonError) -> JSONResponse:
        err = from_core(exc)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(SwitchError)
    async def switch_error(request: Request, exc: SwitchError) -> JSONResponse:
        err = from_core(exc)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.error(
            "unhandled error on %s %s (ref %s)", request.method, request.url.path, ref, exc_info=exc
        )
        return JSONResponse(
            error_body(
                "internal-error", "the server failed this request; it is logged", {"ref": ref}
            ),
            status_code=500,
        )

    for router in (
        auth_router,
        users_router,
        flows_router,
        meetings_router,
        positions_router,
        provision_router,
        records_router,
        voicelog_router,
        events_router,
        sim_router,
    ):
        app.include_router(router)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["operations"],
        dependencies=[Depends(metrics_access)],
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: legs, flows, preemptions, claims, journal, HTTP, and what the
        switch reports (late media frames, registrations). Needs credentials: the configured
        scrape token (``[api] metrics_token``) or a user's session or API token."""
        return PlainTextResponse(
            service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/api/health", tags=["operations"])
    async def health(
        principal: Annotated[Principal | None, Depends(optional_principal)],
    ) -> dict[str, Any]:
        """Liveness, open to anyone: ``ok``. A logged-in caller also sees the run, the switch,
        the journal backlog and the version."""
        if principal is None:
            return {"ok": service.started}
        return {
            "ok": service.started,
            "run": service.run_id,
            "switch": service.config.switch,
            "journal_pending": service.journal.pending if service.started else None,
            "version": __version__,
        }

    @app.get("/api/phone", tags=["auth"])
    async def phone(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> dict[str, str]:
        """Where the console's browser phone connects: the SIP switch's WebSocket address
        (``wss:`` preferred) and the SIP domain; the user registers there as themselves, with
        their password (docs/sip.md, "WebRTC"). 404 when Baton serves no SIP over WebSocket."""
        switch = service.switch
        if isinstance(switch, SipSwitch):
            addresses = {a.transport: a for a in switch.transport.addresses}
            for kind in ("wss", "ws"):
                if kind in addresses:
                    a = addresses[kind]
                    host = f"[{a.host}]" if ":" in a.host else a.host
                    return {"url": f"{kind}://{host}:{a.port}", "domain": host}
        raise NotFound("this Baton serves no SIP over WebSocket", id="no-browser-phone")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/")

    app.mount("/console", StaticFiles(directory=CONSOLE, html=True), name="console")
    app.mount("/docs-assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    return _wrap(app, service)


def _wrap(app: FastAPI, service: Service) -> FastAPI:
    app.add_middleware(_Edge, service=service)
    return app
