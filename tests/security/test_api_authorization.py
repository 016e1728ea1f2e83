"""API authorization probes (issue 14, finding 4): a principal acts only for the users its
role's scope covers — a field unit for its own line, a dispatcher for its centre, a supervisor
for everyone — whatever flow, parameter name or endpoint it tries."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_probe import Api, api, assert_error, eventually, make_config

from baton.core import Meeting, User
from baton.service.config import ConfigError
from baton.service.flows.service import involved_users
from baton.service.store.tables import audit

pytestmark = pytest.mark.realtime

PLUGIN = '''
from baton.core import Session, User, flow

@flow(permission="call")
async def escort(s: Session, escortee: User, crew: list[User], note: str = "") -> None:
    """A plug-in whose user parameters have names the service has never seen."""
    await s.claim(escortee, *crew)
'''


def _flows(svc: Any) -> list[str]:
    return sorted(svc.manager.flows)


async def _post(a: Api, who: str, path: str, body: Any = None) -> Any:
    async with a.client(who) as c:
        return await c.post(path, json=body if body is not None else {})


async def test_a_field_unit_cannot_start_a_call_for_others(tmp_path: Path) -> None:
    async with api(tmp_path, "unit1", "disp1") as (svc, a):
        # The attack: unit1 (field) starts a call between a dispatcher and another unit.
        body = {"flow": "call", "args": {"caller": "disp2", "callee": "unit4"}}
        err = assert_error(await _post(a, "unit1", "/api/flows", body), 403, "user-not-in-scope")
        assert err["details"] == {"users": ["disp2", "unit4"], "role": "field", "scope": "self"}
        assert "unit1 (role field) may start call only for its own line" in err["message"]
        # Even with itself as the caller: the callee is someone else's line.
        body = {"flow": "call", "args": {"caller": "unit1", "callee": "unit2"}}
        err = assert_error(await _post(a, "unit1", "/api/flows", body), 403, "user-not-in-scope")
        assert err["details"]["users"] == ["unit2"]
        assert _flows(svc) == []
        async with a.client("unit1") as c:
            me = (await c.get("/api/me")).json()
        assert (me["scope"], me["acts_for"]) == ("self", ["unit1"])
        async with a.client("disp1") as c:
            me = (await c.get("/api/me")).json()
        assert me["scope"] == "centre" and len(me["acts_for"]) == len(svc.config.users)
        # A group given by id is expanded before the check.
        body = {"flow": "conference", "args": {"dispatcher": "disp1", "members": "engines"}}
        async with a.client("disp1") as c:
            assert (await c.post("/api/flows", json=body)).status_code == 201
        async with svc.store.read() as conn:
            rows = (await conn.execute(sa.select(audit).where(audit.c.principal == "unit1"))).all()
        assert [(r.action, r.outcome) for r in rows].count(("flow.start", "denied")) == 2


async def test_a_field_unit_cannot_pick_up_a_call_ringing_at_a_dispatcher(
    tmp_path: Path,
) -> None:
    roles = {
        "field": {"permissions": ["start", "call", "ptt", "pickup"], "max_priority": "PRIORITY"}
    }
    async with api(tmp_path, "unit1", roles=roles) as (svc, a):
        body = {"flow": "pickup", "args": {"picker": "unit1", "ringing": "disp1"}}
        err = assert_error(await _post(a, "unit1", "/api/flows", body), 403, "user-not-in-scope")
        assert err["details"]["users"] == ["disp1"]
        assert _flows(svc) == []


async def test_a_field_unit_cannot_cancel_a_dispatchers_call(tmp_path: Path) -> None:
    async with api(tmp_path, "unit1", "disp1", "disp2", "sup1") as (svc, a):
        # unit4 never answers: the call keeps ringing while unit1 tries.
        body = {"flow": "call", "args": {"caller": "disp1", "callee": "unit4"}}
        r = await _post(a, "disp1", "/api/flows", body)
        assert r.status_code == 201, r.text
        name = r.json()["name"]
        path = f"/api/flows/{name.replace('#', '%23')}"
        # The attack: unit1 cancels disp1's call.
        err = assert_error(await _post(a, "unit1", f"{path}/cancel"), 403, "user-not-in-scope")
        assert err["details"]["users"] == ["disp1", "unit4"]
        async with a.client("unit1") as c:
            assert_error(await c.delete(path), 403, "user-not-in-scope")
        assert name in svc.manager.flows
        # The dispatcher who started it, another dispatcher of the centre, a supervisor may.
        r = await _post(a, "disp2", f"{path}/cancel")
        assert r.status_code == 200 and r.json()["result"] == "cancelled", r.text
        await eventually(lambda: name not in svc.manager.flows)


async def test_commands_naming_another_user_are_refused(tmp_path: Path) -> None:
    roles = {
        "field": {
            "permissions": ["start", "call", "ptt", "conference"],
            "max_priority": "PRIORITY",
            "scope": "groups",
        },
    }
    async with api(tmp_path, "unit1", roles=roles) as (svc, a):
        # unit1's groups: engines (unit1, unit2) and north (unit1, unit2, unit3).
        body = {"flow": "conference", "args": {"dispatcher": "unit1", "members": ["unit2"]}}
        r = await _post(a, "unit1", "/api/flows", body)
        assert r.status_code == 201, r.text
        name = r.json()["name"].replace("#", "%23")
        r = await _post(
            a, "unit1", f"/api/flows/{name}/commands", {"command": "add", "args": {"user": "disp1"}}
        )
        err = assert_error(r, 403, "user-not-in-scope")
        assert err["details"] == {"users": ["disp1"], "role": "field", "scope": "groups"}
        assert "disp1" not in {u.id for u in svc.manager.flows[name.replace("%23", "#")].users}


async def test_a_plugin_flows_user_parameters_are_checked_whatever_their_names(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "acme_escort.py").write_text(textwrap.dedent(PLUGIN))
    overrides: dict[str, Any] = {
        "flows": {"plugins": ["acme_escort"], "paths": [str(folder)]},
        "roles": {"field": {"permissions": ["call"], "max_priority": 10, "scope": "groups"}},
    }
    async with api(tmp_path, "unit1", "disp1", **overrides) as (_svc, a):
        body = {
            "flow": "escort",
            "args": {"escortee": "unit1", "crew": ["unit2", "unit4", "disp1"]},
        }
        err = assert_error(await _post(a, "unit1", "/api/flows", body), 403, "user-not-in-scope")
        assert err["details"]["users"] == ["unit4", "disp1"]
        body = {"flow": "escort", "args": {"escortee": "unit3", "crew": "engines"}}
        r = await _post(a, "unit1", "/api/flows", body)
        assert r.status_code == 201, r.text
        # A dispatcher acts for the whole centre.
        body = {"flow": "escort", "args": {"escortee": "unit4", "crew": ["disp2"]}}
        assert (await _post(a, "disp1", "/api/flows", body)).status_code == 201


def test_every_user_among_the_arguments_is_found() -> None:
    a, b, c, d = (User(x) for x in "abcd")
    room = Meeting("room", None)
    room.members[c] = None  # type: ignore[assignment]
    room.members[d] = None  # type: ignore[assignment]
    found = involved_users([a, [b, a], (room,), {"k": [d]}, "not a user", 3, None])
    assert found == ["a", "b", "c", "d"]


async def test_virtual_phones_and_meetings_of_others_are_out_of_reach(tmp_path: Path) -> None:
    roles = {"field": {"permissions": ["start", "meeting"], "max_priority": "EMERGENCY"}}
    async with api(tmp_path, "unit1", "disp1", roles=roles) as (svc, a):
        r = await _post(a, "unit1", "/api/sim/phones/disp1/dial", {"to": "1002"})
        err = assert_error(r, 403, "user-not-in-scope")
        assert err["details"]["users"] == ["disp1"]
        r = await _post(a, "unit1", "/api/sim/phones/unit1/dial", {"to": "1002"})
        assert r.status_code == 200, r.text
        body = {"flow": "conference", "args": {"dispatcher": "disp1", "members": ["unit3"]}}
        assert (await _post(a, "disp1", "/api/flows", body)).status_code == 201
        async with a.client("unit1") as c:

            async def live() -> str | None:
                ms = (await c.get("/api/meetings")).json()
                return next((m["id"] for m in ms if m["live"] and len(m["members"]) == 2), None)

            mid = await eventually(live)
            url = f"/api/meetings/{mid.replace('#', '%23')}"
            r = await c.put(f"{url}/members/unit3", json={"mode": "muted"})
            assert_error(r, 403, "user-not-in-scope")
            assert_error(await c.delete(url), 403, "user-not-in-scope")
        assert svc.manager.meeting(mid).members


async def test_priorities_given_as_arguments_are_capped_and_booleans_refused(
    tmp_path: Path,
) -> None:
    roles = {"dispatcher": {"permissions": ["queue", "call"], "max_priority": "FLASH"}}
    async with api(tmp_path, "disp1", roles=roles) as (svc, a):
        # queued_call's own ``priority`` argument: capped like the start's priority.
        body = {"flow": "queued_call", "args": {"caller": "unit1", "priority": 50}}
        err = assert_error(await _post(a, "disp1", "/api/flows", body), 403, "priority-not-allowed")
        assert err["details"]["max_priority"] == "FLASH"
        body = {"flow": "queued_call", "args": {"caller": "unit1", "priority": 10**6}}
        assert_error(
            await _post(a, "disp1", "/api/flows", body), 422, "invalid-argument", "args.priority"
        )
        # ``true`` is not priority 1.
        body = {"flow": "call", "args": {"caller": "disp1", "callee": "unit1"}, "priority": True}
        assert_error(
            await _post(a, "disp1", "/api/flows", body), 422, "invalid-request", "priority"
        )
        assert _flows(svc) == []


async def test_a_member_commands_a_group_for_itself_only(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "unit1", "unit4") as (svc, a):
        body = {"flow": "ptt_group", "args": {"members": "north", "dispatchers": ["disp1"]}}
        r = await _post(a, "disp1", "/api/flows", body)
        assert r.status_code == 201, r.text
        path = f"/api/flows/{r.json()['name'].replace('#', '%23')}/commands"
        unit1 = svc.manager.user("unit1")
        await eventually(lambda: svc.manager.state_of(unit1) not in ("idle", "ringing", "dialling"))
        # unit1 is a member: it may press its own key...
        r = await _post(a, "unit1", path, {"command": "request", "args": {"user": "unit1"}})
        assert r.status_code == 200, r.text
        # ...not another member's, and it may not end the group for everyone.
        r = await _post(a, "unit1", path, {"command": "request", "args": {"user": "unit2"}})
        assert assert_error(r, 403, "user-not-in-scope")["details"]["users"] == ["unit2"]
        assert_error(await _post(a, "unit1", path, {"command": "end"}), 403, "user-not-in-scope")
        # unit4 is no member: naming itself does not let it into the group.
        r = await _post(a, "unit4", path, {"command": "request", "args": {"user": "unit4"}})
        assert_error(r, 403, "user-not-in-scope")
        assert any(f.spec.name == "ptt_group" for f in svc.manager.flows.values())


def test_the_scope_is_set_in_the_role_table_and_checked(tmp_path: Path) -> None:
    config = make_config(tmp_path, roles={"field": {"scope": "groups"}, "desk": {"position": True}})
    roles = config.all_roles
    assert roles["field"].effective_scope == "groups"
    assert roles["field"].permissions == ("start", "call", "ptt")  # the rest is kept
    assert roles["desk"].effective_scope == "centre"  # a new position role
    assert config.all_roles["dispatcher"].effective_scope == "centre"
    with pytest.raises(ConfigError, match=r"roles\.field\.scope"):
        make_config(tmp_path, roles={"field": {"scope": "world"}})
