"""The event stream: every core event, live, over a WebSocket; recent events over HTTP.

WebSocket ``/api/events/stream`` (credentials: the session cookie, ``Authorization: Bearer``, or
``?token=``). Messages, all JSON objects with a ``type``:

* ``hello``: ``{"seq": last event sequence number, "user": the principal}`` — first.
* ``event``: ``{"event": {...kind, seq, t, fields, text, marker}, "users": [views of the users
  the event touches, as of now], "flows": [the flows in progress] (on flow and ownership
  events)}`` — so a console updates its grid from the stream alone.
* ``resync``: the client fell behind and events were dropped; fetch ``/api/users`` and
  ``/api/flows`` again.

A client may send ``{"type": "ping"}``; the server answers ``{"type": "pong"}``. Unauthenticated
connections are closed with code 4401, unauthorised ones with 4403. A stream lives no longer
than its credentials: when the session or token it was opened with is revoked (logout, ``DELETE
/api/tokens/{id}``) or expires, the server closes it with code 4401 and the reason
``token-revoked`` or ``token-expired``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from baton.core.events import Event, Problem
from baton.service.deps import Authed, Svc, authenticate_websocket
from baton.service.errors import ApiError, Forbidden
from baton.service.events.codec import event_json
from baton.service.flows.service import FlowsService
from baton.service.runtime import Service
from baton.service.users.service import UsersService

log = logging.getLogger("baton.service.events")

router = APIRouter(prefix="/api", tags=["events"])

_FLOW_KINDS = frozenset(
    {"flow.started", "flow.ended", "owner.changed", "callinfo.started", "callinfo.ended"}
)


@router.get("/events")
async def recent(
    principal: Authed,
    svc: Svc,
    since: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """Events after sequence number ``since`` still in memory (the journal keeps all)."""
    out = [event_json(e) for e in svc.manager.events.history if e.seq > since]
    return out[-limit:]


class _Messages:
    def __init__(self, svc: Service) -> None:
        self.users = UsersService(svc)
        self.flows = FlowsService(svc)
        self.manager = svc.manager

    def of(self, ev: Event) -> dict[str, Any]:
        d = event_json(ev)
        msg: dict[str, Any] = {"type": "event", "event": d}
        ids: list[str] = []
        if isinstance(d.get("user"), str):
            ids.append(d["user"])
        if isinstance(d.get("users"), list | tuple):
            ids += [u for u in d["users"] if isinstance(u, str)]
        views = []
        for uid in dict.fromkeys(ids):
            with contextlib.suppress(LookupError):
                views.append(self.users.view(self.manager.user(uid)))
        if views:
            msg["users"] = views
        if ev.kind in _FLOW_KINDS:
            msg["flows"] = self.flows.running()
        return msg


@router.websocket("/events/stream")
async def stream(ws: WebSocket) -> None:
    svc: Service = ws.app.state.service
    try:
        principal = await authenticate_websocket(ws, svc)
    except ApiError as exc:
        await ws.close(code=4403 if isinstance(exc, Forbidden) else 4401, reason=exc.id)
        return
    await ws.accept()
    messages = _Messages(svc)
    bus = svc.manager.events
    svc.ws_clients += 1

    async def pump() -> None:
        await ws.send_json({"type": "hello", "seq": bus.last_seq, "user": principal.user_id})
        async for ev in bus.stream(maxsize=2000):
            if isinstance(ev, Problem) and ev.source == "events" and "dropped" in ev.message:
                await ws.send_json({"type": "resync", "reason": ev.message})
                continue
            await ws.send_json(messages.of(ev))

    async def listen() -> None:
        # The client speaks only {"type": "ping"}; anything else it sends — a binary frame,
        # text that is no JSON — is ignored rather than ending the dispatcher's stream.
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(frame.get("code", 1000))
            try:
                msg = json.loads(frame.get("text") or "null")
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("type") == "ping":
                await ws.send_json({"type": "pong"})

    revoked = svc.auth.watch(principal.token_id)

    async def guard() -> None:
        # The stream ends with its credentials: revoked now, or expired later.
        delay = None
        if principal.expires_at is not None:
            delay = max(0.0, principal.expires_at - svc.wallclock())
        reason = "token-revoked"
        try:
            async with asyncio.timeout(delay):
                await revoked.wait()
        except TimeoutError:
            reason = "token-expired"
        await ws.close(code=4401, reason=reason)

    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(pump(), name="ws-pump"),
        loop.create_task(listen(), name="ws-listen"),
        loop.create_task(guard(), name="ws-guard"),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        svc.ws_clients -= 1
        for r in results:
            # A client going away shows as a disconnect (or a send on a closed socket): normal.
            if isinstance(r, Exception) and not isinstance(
                r, WebSocketDisconnect | RuntimeError | ValueError
            ):
                log.error("event stream failed: %r", r)
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close()
