"""The HTTP API, in process (httpx on the ASGI app, no socket), on a real SQLite store."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from baton.service.runtime import Service
from baton.service.store.tables import recordings, tokens
from baton.switch.sim import busy

from .helpers import Api, api, assert_error, eventually

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.realtime


def state(svc: Service, user: str) -> str:
    return svc.manager.state_of(svc.manager.user(user))


async def start(a: Api, who: str, flow: str, **body: Any) -> Any:
    async with a.client(who) as c:
        return await c.post("/api/flows", json={"flow": flow, **body})


# ---------------------------------------------------------------- authentication


async def test_unauthenticated_requests_get_401(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, a), a.client() as c:
        for path in ("/api/users", "/api/flows", "/api/library", "/api/me", "/api/records/legs"):
            assert_error(await c.get(path), 401, "unauthenticated")
        assert_error(await c.post("/api/flows", json={"flow": "call"}), 401)
        r = await c.get("/api/users", headers={"Authorization": "Bearer nonsense"})
        assert_error(r, 401, "bad-token")
        r = await c.get("/api/users", headers={"Authorization": "Basic abc"})
        assert_error(r, 401, "bad-token")
        r = await c.get(
            "/api/users", headers={"Authorization": "Bearer baton_0011223344556677_forged"}
        )
        assert_error(r, 401, "bad-token")


async def test_login_sets_a_session_cookie_and_logout_ends_it(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, a), a.client() as c:
        r = await c.post("/api/login", json={"user": "disp1", "password": "disp1-pw"})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert "baton_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        me = (await c.get("/api/me")).json()
        assert me["user"] == "disp1" and me["role"] == "dispatcher" and me["via"] == "session"
        assert me["position"] is True and me["max_priority_name"] == "EMERGENCY"
        # A cross-site request carrying the cookie is refused.
        r = await c.post("/api/logout", headers={"Origin": "http://evil.example"})
        assert_error(r, 403, "bad-origin")
        assert (await c.post("/api/logout")).status_code == 204
        assert_error(await c.get("/api/me"), 401)


async def test_bad_passwords_are_refused_then_throttled_and_audited(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, a), a.client() as c:
        for _ in range(5):
            r = await c.post("/api/login", json={"user": "disp2", "password": "wrong"})
            assert_error(r, 401, "bad-credentials")
        r = await c.post("/api/login", json={"user": "disp2", "password": "disp2-pw"})
        err = assert_error(r, 429, "too-many-attempts")
        assert err["details"]["retry_after"] > 0 and "retry-after" in r.headers
        # An unknown user gets the same answer as a wrong password.
        r = await c.post("/api/login", json={"user": "nobody", "password": "x"})
        assert r.status_code in (401, 429)
    async with api(tmp_path, "sup1") as (_, a2), a2.client("sup1") as c2:
        entries = (
            await c2.get("/api/audit", params={"action": "login", "outcome": "denied"})
        ).json()
        assert sum(1 for e in entries if e["target"] == "disp2") >= 5


async def test_api_tokens_are_hashed_usable_and_revocable(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "sup1") as (svc, a), a.client("disp1") as c:
        r = await c.post("/api/tokens", json={"label": "script"})
        assert r.status_code == 201
        new = r.json()
        token = new["token"]
        assert token.startswith("baton_") and new["kind"] == "api"
        # Times as every time in the API: ISO 8601 with the zone (90 days by default).
        made = datetime.datetime.fromisoformat(new["created_at"])
        expires = datetime.datetime.fromisoformat(new["expires_at"])
        assert made.utcoffset() == datetime.timedelta(0) and new["revoked_at"] is None
        assert round((expires - made).total_seconds()) == 90 * 86400
        forever = (await c.post("/api/tokens", json={"expires_in_days": None})).json()
        assert forever["expires_at"] is None
        async with svc.store.read() as conn:
            stored = (
                await conn.execute(sa.select(tokens.c.secret_hash).where(tokens.c.id == new["id"]))
            ).scalar_one()
        assert stored.startswith("$argon2id$") and token.split("_", 2)[2] not in stored
        async with a.client() as anon:
            headers = {"Authorization": f"Bearer {token}"}
            assert (await anon.get("/api/me", headers=headers)).json()["via"] == "token"
            listed = (await c.get("/api/tokens")).json()
            assert new["id"] in {t["id"] for t in listed}
            # Someone else cannot revoke it: to them it does not exist.
            async with a.client("sup1") as other:
                assert_error(await other.delete(f"/api/tokens/{new['id']}"), 404, "unknown-token")
                assert_error(await other.get("/api/tokens", params={"all": True}), 403, "forbidden")
            assert (await c.delete(f"/api/tokens/{new['id']}")).status_code == 204
            assert_error(await anon.get("/api/me", headers=headers), 401, "bad-token")


async def test_observers_cannot_list_all_tokens_or_read_the_audit_log(tmp_path: Path) -> None:
    async with api(tmp_path, "obs1", "disp1") as (_, a):
        async with a.client("obs1") as c:
            assert_error(await c.get("/api/tokens", params={"all": True}), 403, "forbidden")
            assert_error(await c.get("/api/audit"), 403, "forbidden")
        async with a.client("disp1") as c:
            assert_error(await c.get("/api/audit"), 403, "forbidden")


# ---------------------------------------------------------------- users and the library


async def test_users_have_live_state(tmp_path: Path) -> None:
    async with api(tmp_path) as (svc, a), a.client("disp1") as c:
        users = {u["id"]: u for u in (await c.get("/api/users")).json()}
        assert users["unit1"]["state"] == "idle" and users["unit1"]["owner"] is None
        assert users["unit1"]["groups"] == ["engines", "north"] and users["disp1"]["position"]
        r = await start(a, "disp1", "call", args={"caller": "disp1", "callee": "unit1"})
        assert r.status_code == 201, r.text
        await eventually(lambda: state(svc, "unit1") == "talking")
        u = (await c.get("/api/users/unit1")).json()
        assert u["state"] == "talking" and u["partner"] == "disp1"
        assert u["owner"]["kind"] == "callinfo" and u["owner"]["priority_name"] == "ROUTINE"
        assert u["label"] == "talking with disp1 · owned by p2p#1 at ROUTINE"
        assert u["leg"]["direction"] == "outbound" and u["leg"]["state"] == "connected"
        assert_error(await c.get("/api/users/ghost"), 404, "unknown-user")


async def test_the_library_lists_every_flow_with_its_parameters(tmp_path: Path) -> None:
    async with api(tmp_path) as (svc, a), a.client("disp1") as c:
        lib = {f["name"]: f for f in (await c.get("/api/library")).json()}
        assert set(lib) == set(svc.library)
        assert all(f["startable"] for f in lib.values())
        call = lib["call"]
        assert [(p["name"], p["kind"], p["required"]) for p in call["params"]] == [
            ("caller", "user", True),
            ("callee", "user", True),
            ("ring", "number", False),
        ]
        assert call["params"][2]["unit"] == "s" and call["params"][2]["default"] == 30.0
        conf = lib["conference"]
        assert conf["params"][1]["kind"] == "users"
        assert conf["params"][2] == {
            "name": "on_leave",
            "kind": "enum",
            "required": False,
            "nullable": False,
            "default": "end",
            "has_default": True,
            "choices": ["end", "continue"],
            "unit": None,
            "type": "OnLeave",
        }
        assert {c["name"]: c["takes_user"] for c in conf["commands"]}["mute"] is True
        assert lib["queued_call"]["params"][1]["kind"] == "resource"
        assert lib["queued_call"]["resources"] == {"queue": ["dispatch"]}
        # What disp1 (a dispatcher) may start, and what not.
        assert lib["emergency_call"]["allowed"] and not lib["force_release"]["allowed"]
        assert not lib["barge_in"]["allowed"]


# ---------------------------------------------------------------- starting flows


async def test_starting_a_flow_checks_permission_priority_and_arguments(tmp_path: Path) -> None:
    async with api(tmp_path) as (svc, a):
        # 403: the role lacks the flow's permission; the refusal is audited.
        r = await start(a, "disp1", "force_release", args={"target": "unit1"})
        assert_error(r, 403, "forbidden")
        r = await start(a, "obs1", "call", args={"caller": "disp1", "callee": "unit1"})
        assert_error(r, 403, "forbidden")
        # 403: above the principal's priority cap (a field user is capped at PRIORITY).
        r = await start(
            a, "unit1", "call", args={"caller": "unit1", "callee": "unit2"}, priority="FLASH"
        )
        err = assert_error(r, 403, "priority-not-allowed")
        assert err["details"] == {"priority": "FLASH", "max_priority": "PRIORITY", "role": "field"}
        # 404: no such flow.
        assert_error(await start(a, "disp1", "teleport"), 404, "unknown-flow")
        # 422: bad arguments, the field named.
        cases = [
            ({"caller": "disp1"}, "args.callee", "invalid-argument"),
            ({"caller": "disp1", "callee": "ghost"}, "args.callee", "unknown-user"),
            ({"caller": 7, "callee": "unit1"}, "args.caller", "invalid-argument"),
            (
                {"caller": "disp1", "callee": "unit1", "ring": "long"},
                "args.ring",
                "invalid-argument",
            ),
            ({"caller": "disp1", "callee": "unit1", "ring": -1}, "args.ring", "invalid-argument"),
            (
                {"caller": "disp1", "callee": "unit1", "colour": "red"},
                "args.colour",
                "invalid-argument",
            ),
        ]
        for args, field, ident in cases:
            assert_error(await start(a, "disp1", "call", args=args), 422, ident, field)
        r = await start(
            a, "disp1", "conference", args={"dispatcher": "disp1", "members": ["unit1", 3]}
        )
        assert_error(r, 422, "invalid-argument", "args.members[1]")
        r = await start(
            a, "disp1", "conference", args={"dispatcher": "disp1", "members": "nogroup"}
        )
        assert_error(r, 422, "unknown-group", "args.members")
        r = await start(
            a,
            "disp1",
            "conference",
            args={"dispatcher": "disp1", "members": [], "on_leave": "sulk"},
        )
        assert_error(r, 422, "invalid-argument", "args.on_leave")
        r = await start(
            a, "disp1", "call", args={"caller": "disp1", "callee": "unit1"}, priority="urgent"
        )
        assert_error(r, 422, "invalid-argument", "priority")
        async with a.client("disp1") as c:
            r = await c.post("/api/flows", json={"args": {}})
            assert_error(r, 422, "invalid-request", "flow")
            r = await c.post(
                "/api/flows", content=b"{not json", headers={"content-type": "application/json"}
            )
            assert_error(r, 422, "invalid-request", "body")
        assert svc.manager.flows == {}  # nothing was started by any of these
    async with api(tmp_path, "sup1") as (_, a2), a2.client("sup1") as c:
        denied = (
            await c.get("/api/audit", params={"action": "flow.start", "outcome": "denied"})
        ).json()
        assert {(e["principal"], e["target"]) for e in denied} >= {
            ("disp1", "force_release"),
            ("obs1", "call"),
            ("unit1", "call"),
        }


async def test_a_core_conflict_is_a_409_with_the_core_code(tmp_path: Path) -> None:
    async with api(tmp_path) as (svc, a):
        r = await start(
            a, "disp1", "emergency_call", args={"dispatcher": "disp1", "target": "unit1"}
        )
        assert r.status_code == 201, r.text
        assert r.json()["priority_name"] == "EMERGENCY" and r.json()["started_by"] == "disp1"
        await eventually(lambda: state(svc, "unit1") == "talking")
        # A routine call cannot take unit1 from an emergency: the claim is denied at once.
        r = await start(a, "disp1", "call", args={"caller": "disp2", "callee": "unit1"})
        err = assert_error(r, 409, "claim-denied")
        assert err["details"]["holder_priority"] == 50 and err["details"]["flow"].startswith(
            "call#"
        )
        # A busy phone fails the call at its first step too.
        svc.sim.behave("unit3", busy(0.01))  # type: ignore[union-attr]
        r = await start(a, "disp1", "call", args={"caller": "disp2", "callee": "unit3"}, wait=True)
        assert_error(r, 409, "busy")


async def test_a_flow_parameter_named_priority_does_not_collide_with_the_start_priority(
    tmp_path: Path,
) -> None:
    async with api(tmp_path) as (_svc, a):
        r = await start(a, "disp1", "queued_call", args={"caller": "unit1", "priority": 20})
        assert_error(r, 409, "flow-usage")  # unit1 is not calling in: answer() refuses
        r = await start(a, "disp1", "queued_call", args={"caller": "unit1", "priority": "high"})
        assert_error(r, 422, "invalid-argument", "args.priority")


async def test_arguments_a_flow_cannot_work_with_are_a_422_not_a_conflict(
    tmp_path: Path,
) -> None:
    """docs/service.md, Errors: a broadcast with neither a message nor a speaker is a bad body
    (422 invalid-argument naming the field), like a wrong type — not a 409, which says the
    users' state refused a request that could succeed later; that one stays a 409."""
    async with api(tmp_path) as (svc, a):
        r = await start(a, "disp1", "broadcast", args={"members": ["unit1", "unit2"]})
        err = assert_error(r, 422, "invalid-argument", "args.message")
        assert "needs a message or a dispatcher" in err["message"]
        assert state(svc, "unit1") == "idle"  # nothing was done
        r = await start(a, "disp1", "monitor", args={"dispatcher": "disp1", "target": "disp1"})
        assert_error(r, 422, "invalid-argument", "args.target")
        r = await start(a, "disp1", "monitor", args={"dispatcher": "disp1", "target": "unit1"})
        assert_error(r, 409, "flow-usage")  # unit1 is in no call to listen to: the state


async def test_calling_oneself_is_a_422_and_rings_nobody(tmp_path: Path) -> None:
    # call(disp1, disp1) rang disp1's line, then failed with 409 flow-usage "cannot bridge a
    # user to itself": a request that can never succeed, whatever the state.
    async with api(tmp_path) as (svc, a):
        r = await start(a, "disp1", "call", args={"caller": "unit1", "callee": "unit1"})
        err = assert_error(r, 422, "invalid-argument", "args.callee")
        assert "unit1" in err["message"]
        assert state(svc, "unit1") == "idle"  # nothing was rung


async def test_a_ptt_group_refuses_a_negative_hang_time_or_no_talk_time(tmp_path: Path) -> None:
    # hang_time = -5 ended the group at once, max_burst = 0 revoked every grant at once:
    # both were started (201) and ended with nothing said; now a 422 naming the field.
    async with api(tmp_path) as (svc, a):
        members = ["unit2", "unit3"]
        r = await start(a, "disp1", "ptt_group", args={"members": members, "hang_time": -5})
        assert_error(r, 422, "invalid-argument", "args.hang_time")
        r = await start(a, "disp1", "ptt_group", args={"members": members, "max_burst": 0})
        assert_error(r, 422, "invalid-argument", "args.max_burst")
        assert state(svc, "unit2") == "idle" and not svc.manager.flows
        async with a.client("disp1") as c:
            lib = {f["name"]: f for f in (await c.get("/api/library")).json()}
        units = {p["name"]: p["unit"] for p in lib["ptt_group"]["params"]}
        assert units["hang_time"] == "s" and units["max_burst"] == "s"


async def test_start_with_wait_returns_the_outcome_and_value(tmp_path: Path) -> None:
    async with api(tmp_path) as (_svc, a):
        r = await start(
            a,
            "disp1",
            "polling",
            args={"dispatcher": "disp1", "members": ["unit4", "unit2"], "ring": 0.2},
            wait=True,
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["outcome"] == "completed" and body["value"] == "unit2"
        # The view of a flow that has ended still says what it was started with, and by whom.
        assert body["args"]["members"] == ["unit4", "unit2"], body
        assert body["started_by"] == "disp1" and body["started_at"] is not None


async def test_cancel_is_idempotent_and_ending_an_emergency_needs_the_right(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "sup1", "unit1") as (svc, a):
        r = await start(
            a, "disp1", "emergency_call", args={"dispatcher": "disp1", "target": "unit2"}
        )
        name = r.json()["name"]
        path = f"/api/flows/{name.replace('#', '%23')}"
        await eventually(lambda: state(svc, "unit2") == "talking")
        async with a.client("disp1") as c:
            assert_error(await c.post(f"{path}/cancel"), 403, "forbidden")
            r = await c.post(f"{path}/commands", json={"command": "end"})
            assert_error(r, 403, "forbidden")
            r = await c.post(f"{path}/commands", json={"command": "explode"})
            assert_error(r, 422, "unknown-command", "command")
        async with a.client("unit1") as c:
            assert_error(await c.post(f"{path}/cancel"), 403)
        async with a.client("sup1") as c:
            r = await c.post(f"{path}/commands", json={"command": "end"})
            assert r.status_code == 200, r.text
            assert r.json()["reply"] == "ended"
            await eventually(lambda: name not in svc.manager.flows)
            # A command to a flow that has ended: nobody will answer it, and the id says so.
            r = await c.post(f"{path}/commands", json={"command": "end"})
            assert_error(r, 409, "flow-ended")
            # Cancelling an ended flow is a no-op that says so, for whoever could cancel it.
            r = await c.post(f"{path}/cancel")
            assert r.status_code == 200 and r.json() == {"flow": name, "result": "already_ended"}
            assert (await c.delete(path)).json()["result"] == "already_ended"
            assert_error(await c.post("/api/flows/call%23999/cancel"), 404, "unknown-flow")
        async with a.client("disp1") as c:
            assert_error(await c.post(f"{path}/cancel"), 403, "forbidden")
        async with a.client("unit1") as c:
            assert_error(await c.post(f"{path}/cancel"), 403)
        # Ended, the emergency left disp1 and unit2 in an ordinary call; disp2 is free.
        r = await start(a, "disp1", "call", args={"caller": "disp2", "callee": "unit4"})
        name = r.json()["name"]
        path = f"/api/flows/{name.replace('#', '%23')}"
        async with a.client("disp1") as c:
            assert (await c.get("/api/flows")).json()[0]["name"] == name
            assert (await c.post(f"{path}/cancel", json={"reason": "wrong number"})).json()[
                "result"
            ] == "cancelled"
            second = await c.post(f"{path}/cancel")
            assert second.status_code == 200
            assert second.json()["result"].startswith("already")
        await eventually(lambda: state(svc, "unit4") == "idle")


async def test_a_command_naming_a_bad_user_is_a_422_naming_the_field(tmp_path: Path) -> None:
    # docs/service.md, Errors: bad arguments are 422 with details.field; 404 is for ids in
    # the path. A command's user is an argument.
    async with api(tmp_path, "disp1") as (svc, a), a.client("disp1") as c:
        r = await start(
            a, "disp1", "conference", args={"dispatcher": "disp1", "members": "engines"}
        )
        path = f"/api/flows/{r.json()['name'].replace('#', '%23')}/commands"
        await eventually(lambda: state(svc, "unit1") == "meeting")
        r = await c.post(path, json={"command": "mute", "args": {"user": "ghost"}})
        err = assert_error(r, 422, "unknown-user", "args.user")
        assert err["message"] == "args.user: no user 'ghost'", err
        r = await c.post(path, json={"command": "mute", "args": {"user": 5}})
        assert_error(r, 422, "invalid-argument", "args.user")
        r = await c.post(path, json={"command": "mute"})
        assert_error(r, 422, "invalid-argument", "args.user")
        r = await c.post(path, json={"command": "mute", "args": {"user": "unit1"}})
        assert r.status_code == 200, r.text
        await c.post(path, json={"command": "end"})


async def test_conference_commands_and_meeting_controls(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "obs1") as (svc, a), a.client("disp1") as c:
        r = await start(
            a, "disp1", "conference", args={"dispatcher": "disp1", "members": "engines"}
        )
        name = r.json()["name"]
        m = svc.manager
        await eventually(
            lambda: state(svc, "unit1") == "meeting" and state(svc, "unit2") == "meeting"
        )
        (meeting,) = [x for x in (await c.get("/api/meetings")).json() if x["live"]]
        assert meeting["holder"]["name"] == name
        assert {x["user"]: x["mode"] for x in meeting["members"]} == {
            "disp1": "speak",
            "unit1": "speak",
            "unit2": "speak",
        }
        mid = quote(meeting["id"], safe="")  # meeting#1
        r = await c.put(f"/api/meetings/{mid}/members/unit1", json={"mode": "muted"})
        assert r.status_code == 200, r.text
        assert svc.sim.hears("unit2") == {"disp1"}  # type: ignore[union-attr]
        r = await c.post(
            f"/api/flows/{name.replace('#', '%23')}/commands",
            json={"command": "add", "args": {"user": "unit3"}},
        )
        assert r.status_code == 200 and r.json()["reply"] == "ringing"
        await eventually(lambda: state(svc, "unit3") == "meeting")
        assert_error(
            await c.put(f"/api/meetings/{mid}/members/ghost", json={"mode": "muted"}),
            404,
            "unknown-member",
        )
        assert_error(
            await c.put(f"/api/meetings/{mid}/members/unit1", json={"mode": "loud"}),
            422,
            "invalid-request",
            "mode",
        )
        assert_error(await c.delete("/api/meetings/nope"), 404, "unknown-meeting")
        async with a.client("obs1") as o:
            err = assert_error(
                await o.delete(f"/api/meetings/{mid}/members/unit2"), 403, "forbidden"
            )
            assert err["message"] == (
                "role 'observer' may not kick members out of meetings (needs permission 'meeting')"
            )
            r = await o.put(f"/api/meetings/{mid}/members/unit1", json={"mode": "speak"})
            assert "may not mute, unmute or set listen-only in meetings" in r.text
        assert (await c.delete(f"/api/meetings/{mid}/members/unit2")).status_code == 200
        await eventually(lambda: state(svc, "unit2") == "idle")
        assert (await c.delete(f"/api/meetings/{mid}")).json()["reply"] == "ended"
        await eventually(lambda: name not in m.flows)


async def test_a_dial_in_room_is_controlled_through_its_meeting_call(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1") as (svc, a), a.client("disp1") as c:
        for user in ("unit1", "unit2"):
            assert (
                await c.post(f"/api/sim/phones/{user}/dial", json={"to": "3000"})
            ).status_code == 200
        await eventually(
            lambda: state(svc, "unit1") == "meeting" and state(svc, "unit2") == "meeting"
        )
        room = next(x for x in (await c.get("/api/meetings")).json() if x["id"] == "ops")
        assert (
            room["live"]
            and room["holder"]["kind"] == "callinfo"
            and room["room"]["number"] == "3000"
        )
        r = await c.put("/api/meetings/ops/members/unit2", json={"mode": "listen"})
        assert r.status_code == 200, r.text
        assert svc.sim.hears("unit1") == set()  # type: ignore[union-attr]
        assert svc.sim.hears("unit2") == {"unit1"}  # type: ignore[union-attr]
        assert (await c.delete("/api/meetings/ops")).status_code == 200
        await eventually(lambda: state(svc, "unit1") == "idle" and state(svc, "unit2") == "idle")
        room = next(x for x in (await c.get("/api/meetings")).json() if x["id"] == "ops")
        assert not room["live"]


# ---------------------------------------------------------------- records, recordings, errors


async def test_call_records_with_filters_and_flow_traces(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1") as (svc, a), a.client("disp1") as c:
        await start(a, "disp1", "call", args={"caller": "disp1", "callee": "unit1"})
        await eventually(lambda: state(svc, "unit1") == "talking")
        await start(
            a, "disp1", "call", args={"caller": "disp2", "callee": "unit4", "ring": 0.3}, wait=True
        )
        legs = (await c.get("/api/records/legs", params={"user": "unit4"})).json()
        assert [(x["user_id"], x["end_reason"]) for x in legs] == [("unit4", "no_answer")]
        assert (await c.get("/api/records/legs", params={"open": True, "user": "unit1"})).json()[0][
            "answered_at"
        ]
        failed = (await c.get("/api/records/flows", params={"outcome": "failed"})).json()
        assert [f["flow"] for f in failed] == ["call#2"] and "NoAnswer" in failed[0]["error"]
        assert failed[0]["started_by"] == "disp1"
        by_user = (await c.get("/api/records/flows", params={"user": "unit1"})).json()
        assert [f["flow"] for f in by_user] == ["call#1"]
        detail = (await c.get(f"/api/records/flows/{by_user[0]['id']}")).json()
        assert detail["preemptions_suffered"] == []
        trace = (await c.get(f"/api/records/flows/{by_user[0]['id']}/trace")).json()
        assert trace["lifelines"][:3] == ["call#1", "disp1", "unit1"] and trace["ended"]
        live = (await c.get("/api/flows/call%231/trace")).json()
        assert [s["label"] for s in live["steps"]][:3] == ["start at ROUTINE", "claim", "claim"]
        assert_error(await c.get("/api/records/flows/999"), 404, "unknown-record")
        assert_error(
            await c.get("/api/records/legs", params={"limit": 0}), 422, "invalid-request", "limit"
        )
        assert_error(await c.get("/api/flows/nope%231/trace"), 404, "unknown-flow")


async def test_recordings_are_indexed_and_downloaded_only_from_their_folder(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "obs1") as (svc, a), a.client("disp1") as c:
        folder = svc.config.recordings
        assert folder.is_dir()  # made at start
        wav = folder / "r1.wav"
        wav.write_bytes(b"RIFF....WAVE")
        outside = tmp_path / "secret.wav"
        outside.write_bytes(b"secret")
        for path in (wav, outside):
            await svc.journal.execute(
                sa.insert(recordings).values(run_id=svc.run_id, path=str(path), started_at=1.0)
            )
        listed = (await c.get("/api/recordings")).json()
        assert {(x["path"], x["available"]) for x in listed} == {
            (str(wav), True),
            (str(outside), False),
        }
        ids = {x["path"]: x["id"] for x in listed}
        r = await c.get(f"/api/recordings/{ids[str(wav)]}/download")
        assert r.status_code == 200 and r.content == b"RIFF....WAVE"
        assert r.headers["content-type"] == "audio/wav"
        assert_error(
            await c.get(f"/api/recordings/{ids[str(outside)]}/download"), 404, "recording-missing"
        )
        assert_error(await c.get("/api/recordings/4242/download"), 404, "unknown-recording")
        async with a.client("obs1") as o:
            assert_error(await o.get("/api/recordings"), 403, "forbidden")


async def test_every_error_has_the_documented_shape(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1") as (_, a), a.client("disp1") as c:
        assert_error(await c.get("/api/nothing-here"), 404, "not-found")
        assert_error(await c.put("/api/users"), 405, "method-not-allowed")
        big = b'{"flow": "call", "args": {"x": "' + b"a" * (1 << 20) + b'"}}'
        r = await c.post("/api/flows", content=big, headers={"content-type": "application/json"})
        assert_error(r, 413, "too-large")
        assert "x-request-id" in (await c.get("/api/me")).headers


async def test_metrics_and_openapi(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1") as (svc, a), a.client("disp1") as c:
        await start(a, "disp1", "call", args={"caller": "disp1", "callee": "unit1"})
        await eventually(lambda: state(svc, "unit1") == "talking")
        await start(a, "disp1", "emergency_call", args={"dispatcher": "disp2", "target": "unit1"})
        await eventually(
            lambda: (
                state(svc, "unit1") == "talking"
                and svc.manager.owner_of(svc.manager.user("unit1")).priority == 50
            )
        )  # type: ignore[union-attr]
        text = (await c.get("/metrics")).text
        lines = set(text.splitlines())
        assert 'baton_flows_started_total{flow="call"} 1' in lines
        assert 'baton_preemptions_total{priority="EMERGENCY"} 1' in lines
        assert 'baton_legs_started_total{direction="outbound"} 3' in lines  # unit1's leg is reused
        assert "baton_switch_registrations 8" in lines
        assert "# TYPE baton_preemption_seconds histogram" in lines
        assert any(
            x.startswith('baton_http_requests_total{method="POST",route="/api/flows",status="201"}')
            for x in lines
        )
        spec = (await c.get("/openapi.json")).json()
        assert "/api/flows" in spec["paths"] and "/api/flows/{name}/commands" in spec["paths"]
        assert (await c.get("/docs")).status_code == 200


async def test_every_documented_metric_is_exposed_from_the_first_scrape(tmp_path: Path) -> None:
    # docs/service.md, Operations, names the metrics; an alert on one (say an increase of
    # baton_problems_total) must find its series before the first such event.
    ops = (ROOT / "docs/service.md").read_text().split("## Operations", 1)[1].split("\nLogs:")[0]
    documented = set(re.findall(r"`(baton_[a-z_]+)", ops)) - {"baton_switch_"}
    assert "baton_problems_total" in documented and len(documented) > 25
    async with api(tmp_path, "disp1") as (_, a), a.client("disp1") as c:
        text = (await c.get("/metrics")).text
    exposed = set(re.findall(r"^# TYPE (baton_\w+) ", text, re.M))
    assert documented <= exposed, sorted(documented - exposed)
    # ... and the other way: what an operator sees on /metrics is on the page too (the queue's
    # and the switch's families by their prefix, the positions' where the queue is told)
    page = (ROOT / "docs/service.md").read_text()
    named = set(re.findall(r"`(baton_[a-z_]+)", page))
    covered = ("baton_queue_", "baton_switch_")
    undocumented = {m for m in exposed - named if not m.startswith(covered)}
    assert not undocumented, sorted(undocumented)
    lines = set(text.splitlines())
    assert {"baton_problems_total 0", "baton_preemptions_superseded_total 0"} <= lines


JSON = {"content-type": "application/json"}


async def test_a_malformed_request_is_named_in_plain_words(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, a), a.client("disp1") as c:
        r = await c.post(
            "/api/flows", content=b"not json", headers={"content-type": "application/json"}
        )
        err = assert_error(r, 422, "invalid-request", "body")
        assert err["message"] == "body: JSON decode error", err
        body = {"flow": "call", "args": {"caller": "disp1", "callee": "unit1"}, "priority": True}
        err = assert_error(await c.post("/api/flows", json=body), 422, "invalid-request")
        assert err["message"] == (
            "priority: a priority is a level name or an integer, not a boolean"
        ), err
        for bad in (b"1.5", b"NaN", b'["FLASH"]'):  # named once, not as the union's parts
            body = b'{"flow": "call", "args": {"caller": "disp1", "callee": "unit1"}, "priority": '
            r = await c.post("/api/flows", content=body + bad + b"}", headers=JSON)
            err = assert_error(r, 422, "invalid-request")
            assert err["message"] == "priority: a priority is a level name or an integer", err
            assert err["details"]["field"] == "priority"


async def test_a_body_too_deep_or_a_number_too_long_is_a_422_too(tmp_path: Path) -> None:
    # A JSON body nested 100 000 deep, or with a 5 000-digit number, made the JSON reader fail
    # otherwise than on bad syntax, and the answer was 400 bad-request "There was an error
    # parsing the body" — a status and id the documented table does not have.
    deep = b"[" * 100_000
    long = b'{"flow": "call", "args": {"ring": ' + b"9" * 5000 + b"}}"
    async with api(tmp_path) as (_, a), a.client("disp1") as c:
        for body in (deep, long):
            r = await c.post(
                "/api/flows", content=body, headers={"content-type": "application/json"}
            )
            err = assert_error(r, 422, "invalid-request", "body")
            assert err["message"].startswith("body: "), err


async def test_force_release_back_to_the_queue_uses_the_centres_queue(tmp_path: Path) -> None:
    # docs/service.md, "Flow arguments": a parameter the service provides (the dispatcher
    # queue) is filled in. force_release's `queue` is optional (other=RELEASE needs none), and
    # it was left out: other=QUEUE from the API or the console (queue "(none)") was a 422
    # "needs a queue" and the supervisor could not hand the caller back to the queue.
    async with api(tmp_path, "disp1", "sup1") as (svc, a):
        r = await start(a, "disp1", "call", args={"caller": "disp1", "callee": "unit1"}, wait=True)
        assert r.status_code == 201, r.text
        args = {"target": "disp1", "other": "queue"}
        r = await start(a, "sup1", "force_release", args=args, wait=True)
        assert r.status_code == 201, r.text
        assert r.json()["args"]["queue"] == "dispatch"
        # unit1 waits in the queue (or is already offered to the next position), not dropped.
        await eventually(
            lambda: (
                state(svc, "unit1") != "idle"
                and svc.manager.owner_of(svc.manager.user("unit1")) is not None
            )
        )
        owner = svc.manager.owner_of(svc.manager.user("unit1"))
        assert owner is not None and "queued_call" in str(owner), owner
