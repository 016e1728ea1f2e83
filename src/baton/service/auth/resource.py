"""Authentication endpoints: log in and out, who am I, API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from baton.core.priority import priority_name
from baton.service.auth.permissions import Principal
from baton.service.auth.schema import (
    LoginRequest,
    LoginResponse,
    Me,
    NewToken,
    TokenRequest,
    TokenView,
)
from baton.service.auth.service import TokenInfo
from baton.service.deps import SESSION_COOKIE, Authed, Svc, client_address
from baton.service.errors import NotFound, Unauthenticated
from baton.service.positions.service import AgentState
from baton.service.records.present import iso

router = APIRouter(prefix="/api", tags=["auth"])


def _me(svc: Svc, p: Principal) -> Me:
    positions = {u.id for u in svc.config.positions}
    return Me(
        user=p.user_id,
        name=p.name,
        role=p.role,
        permissions=sorted(p.permissions),
        max_priority=p.max_priority,
        max_priority_name=priority_name(p.max_priority),
        via=p.via,
        position=p.user_id in positions,
        scope=p.scope_name,
        acts_for=None if p.scope is None else sorted(p.scope),
    )


def _token_view(t: TokenInfo) -> TokenView:
    return TokenView(
        id=t.id,
        user=t.user_id,
        kind=t.kind,
        label=t.label,
        created_at=iso(t.created_at),
        expires_at=None if t.expires_at is None else iso(t.expires_at),
        revoked_at=None if t.revoked_at is None else iso(t.revoked_at),
    )


@router.post("/login", response_model=LoginResponse)
async def login(
    body: LoginRequest, request: Request, response: Response, svc: Svc
) -> LoginResponse:
    """Log in with a user id and password. Sets the ``baton_session`` cookie (HttpOnly,
    SameSite=Strict; Secure when served over TLS) and returns the session token for scripts. 401 ``bad-credentials``; 429
    ``too-many-attempts`` after repeated failures."""
    remote = client_address(request)
    try:
        principal, token = await svc.auth.login(body.user, body.password, remote)
    except Unauthenticated as exc:
        svc.audit(None, "login", body.user, "denied", {"error": exc.id}, remote=remote)
        await svc.journal.sync()
        raise
    lifetime = svc.config.api.session_hours * 3600
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(lifetime),
        httponly=True,
        samesite="strict",
        secure=svc.config.api.secure_cookies,
        path="/",
    )
    svc.audit(
        principal, "login", principal.user_id, "ok", {"session": principal.token_id}, remote=remote
    )
    await svc.journal.sync()
    return LoginResponse(**_me(svc, principal).model_dump(), token=token, expires_in=lifetime)


@router.post("/logout", status_code=204)
async def logout(request: Request, response: Response, principal: Authed, svc: Svc) -> None:
    """End the current session (or revoke the token used). A position signing out of its last
    console session is logged out as an agent too: the queue stops offering it calls nobody
    is there to answer (docs/service.md, "Positions")."""
    await svc.auth.revoke(principal.token_id)
    response.delete_cookie(SESSION_COOKIE, path="/")
    svc.audit(principal, "logout", principal.token_id, "ok", {}, remote=client_address(request))
    if svc.positions.is_position(principal.user_id):
        now = svc.wallclock()
        mine = await svc.auth.list_tokens(principal.user_id)
        was_session = any(t.id == principal.token_id and t.kind == "session" for t in mine)
        still_in = any(
            t.kind == "session"
            and t.id != principal.token_id
            and t.revoked_at is None
            and (t.expires_at is None or t.expires_at > now)
            for t in mine
        )
        if was_session and not still_in:
            svc.positions.set(
                principal.user_id,
                AgentState.LOGGED_OUT,
                by=principal.user_id,
                role=principal.role,
                via="console",
            )
    await svc.journal.sync()


@router.get("/me", response_model=Me)
async def me(principal: Authed, svc: Svc) -> Me:
    """The caller, its role, permissions and priority cap."""
    return _me(svc, principal)


@router.get("/tokens", response_model=list[TokenView])
async def list_tokens(principal: Authed, svc: Svc, all: bool = False) -> list[TokenView]:
    """The caller's tokens and sessions (``all=true``: everyone's; needs ``tokens``)."""
    if all:
        principal.require("tokens", "see other users' tokens")
    return [_token_view(t) for t in await svc.auth.list_tokens(None if all else principal.user_id)]


@router.post("/tokens", response_model=NewToken, status_code=201)
async def create_token(
    body: TokenRequest, request: Request, principal: Authed, svc: Svc
) -> NewToken:
    """Create an API token for the caller (``Authorization: Bearer <token>``). The token is
    shown once; only its hash is stored."""
    lifetime = None if body.expires_in_days is None else body.expires_in_days * 86400
    token, info = await svc.auth.create_token(principal.user_id, "api", body.label, lifetime)
    svc.audit(
        principal,
        "token.create",
        info.id,
        "ok",
        {"label": body.label},
        remote=client_address(request),
    )
    await svc.journal.sync()
    return NewToken(**_token_view(info).model_dump(), token=token)


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: str, request: Request, principal: Authed, svc: Svc) -> None:
    """Revoke a token or end a session: one's own, or anyone's with ``tokens``."""
    info = await svc.auth.token(token_id)
    if info.user_id != principal.user_id and not principal.may("tokens"):
        raise NotFound(f"no token {token_id!r}", id="unknown-token", details={"token": token_id})
    await svc.auth.revoke(token_id)
    svc.audit(
        principal,
        "token.revoke",
        token_id,
        "ok",
        {"owner": info.user_id},
        remote=client_address(request),
    )
    await svc.journal.sync()
