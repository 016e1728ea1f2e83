"""Provisioning over the API: users, groups, rooms and roles created, changed and removed — live at
once, stored (and the store the truth after the first start), authorised, audited, with clear
4xx answers (docs/service.md, Provisioning)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from baton.service.config import parse_config
from baton.service.runtime import Service

from .helpers import FAST_HASHER, Api, assert_error, config_data, eventually

pytestmark = pytest.mark.realtime

ADMIN = {"id": "adm1", "password": "adm1-pw", "role": "admin"}


def data_with_admin(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    data = config_data(tmp_path, **overrides)
    data["users"] = [*data["users"], ADMIN]
    return data


@contextlib.asynccontextmanager
async def centre(tmp_path: Path, data: dict[str, Any] | None = None) -> AsyncIterator[Api]:
    svc = Service(
        parse_config(data or data_with_admin(tmp_path), "test"), hasher=FAST_HASHER, grace=1.0
    )
    await svc.start()
    try:
        a = Api(svc)
        await a.login("disp1", "sup1")
        async with a.client() as c:
            r = await c.post("/api/login", json={"user": "adm1", "password": "adm1-pw"})
            a.tokens["adm1"] = r.json()["token"]
        yield a
    finally:
        await svc.stop()


async def login(a: Api, user: str, password: str) -> httpx.Response:
    async with a.client() as c:
        r = await c.post("/api/login", json={"user": user, "password": password})
    if r.status_code == 200:
        a.tokens[user] = r.json()["token"]
    return r


def state(svc: Service, user: str) -> str:
    return svc.manager.state_of(svc.manager.user(user))


async def audit(a: Api, action: str) -> list[dict[str, Any]]:
    async with a.client("adm1") as c:
        r = await c.get("/api/audit", params={"action": action})
    assert r.status_code == 200, r.text
    entries: list[dict[str, Any]] = r.json()
    return entries


NEW_UNIT = {"id": "unit9", "name": "Engine 9", "numbers": ["1009"], "password": "unit9-pw"}


async def test_a_new_user_can_log_in_and_be_called_at_once(tmp_path: Path) -> None:
    async with centre(tmp_path) as a, a.client("adm1") as c:
        svc = a.svc
        r = await c.post("/api/users", json=NEW_UNIT)
        assert r.status_code == 201, r.text
        assert r.json() == {
            "id": "unit9",
            "name": "Engine 9",
            "numbers": ["1009"],
            "role": "field",
        }  # never the password; unset keys omitted
        assert (await login(a, "unit9", "unit9-pw")).status_code == 200
        # Called by a dispatcher through the API, and by number from a phone.
        async with a.client("disp1") as d:
            r = await d.post(
                "/api/flows", json={"flow": "call", "args": {"caller": "disp1", "callee": "unit9"}}
            )
            assert r.status_code == 201, r.text
            await eventually(lambda: state(svc, "unit9") == "talking")
            assert (await d.post("/api/users/disp1/hangup")).status_code == 200
            await eventually(lambda: state(svc, "unit9") == "idle")
            view = (await d.get("/api/users/unit9")).json()
            assert view["registration"]["registered"] and view["name"] == "Engine 9"
            r = await d.post("/api/sim/phones/unit1/dial", json={"to": "1009"})
            assert r.status_code == 200, r.text
            await eventually(lambda: state(svc, "unit9") == "talking")
        (entry,) = await audit(a, "user.create")
        assert entry["principal"] == "adm1" and entry["target"] == "unit9"
        assert entry["outcome"] == "ok" and "password" not in entry["details"]["fields"]
        assert "unit9-pw" not in str(entry)


async def test_only_a_provisioner_may_and_bad_input_is_a_clear_4xx(tmp_path: Path) -> None:
    async with centre(tmp_path) as a, a.client("adm1") as c:
        for who in ("disp1", "sup1"):
            async with a.client(who) as other:
                err = assert_error(await other.post("/api/users", json=NEW_UNIT), 403, "forbidden")
                assert err["details"]["permission"] == "provision"
        assert [e["outcome"] for e in await audit(a, "user.create")] == ["denied", "denied"]
        r = await c.post("/api/users", json={**NEW_UNIT, "colour": "red"})
        assert_error(r, 422, "invalid-request", field="colour")
        assert_error(
            await c.post("/api/users", json={**NEW_UNIT, "id": "unit1"}), 409, "already-exists"
        )
        err = assert_error(
            await c.post("/api/users", json={**NEW_UNIT, "numbers": ["1001"]}), 409, "number-in-use"
        )
        assert err["details"] == {"number": "1001", "used_by": "user 'unit1'"}
        err = assert_error(
            await c.post("/api/users", json={**NEW_UNIT, "role": "chief"}), 422, "invalid-directory"
        )
        assert "unknown role 'chief'" in err["message"]
        assert_error(await c.patch("/api/users/ghost", json={"name": "x"}), 404, "unknown-user")
        r = await c.patch("/api/users/unit1", json={"numbers": ["12ab"]})
        assert_error(r, 422, "invalid-request", field="numbers")
        assert_error(await c.delete("/api/users/adm1"), 409, "cannot-remove-self")
        assert_error(await c.delete("/api/roles/dispatcher"), 409, "builtin-role")
        err = assert_error(await c.delete("/api/groups/nope"), 404, "unknown-group")
        assert err["details"] == {"group": "nope"}
        assert "unit9" not in {u["id"] for u in (await c.get("/api/users")).json()}


async def test_removing_a_user_in_a_call_is_refused_saying_why(tmp_path: Path) -> None:
    async with centre(tmp_path) as a, a.client("adm1") as c:
        svc = a.svc
        r = await login(a, "unit2", "unit2-pw")
        assert r.status_code == 200
        session = r.json()["token"].split("_")[1]
        stream = svc.auth.watch(session)  # what an event stream opened with it waits on
        async with a.client("disp1") as d:
            r = await d.post(
                "/api/flows", json={"flow": "call", "args": {"caller": "disp1", "callee": "unit2"}}
            )
            assert r.status_code == 201, r.text
            await eventually(lambda: state(svc, "unit2") == "talking")
            err = assert_error(await c.delete("/api/users/unit2"), 409, "user-busy")
            assert err["details"]["state"] == "talking" and err["details"]["owner"] == "p2p#1"
            assert "end it first" in err["message"]
            assert (await d.post("/api/users/disp1/hangup")).status_code == 200
            await eventually(lambda: state(svc, "unit2") == "idle")
        r = await c.delete("/api/users/unit2")
        assert r.status_code == 200, r.text
        assert r.json() == {"removed": "unit2", "kind": "user", "groups": ["engines", "north"]}
        # Gone everywhere, at once: the directory, its groups, its phone, its sessions.
        assert_error(await c.get("/api/users/unit2"), 404, "unknown-user")
        groups = {g["id"]: g for g in (await c.get("/api/groups")).json()}
        assert groups["engines"]["members"] == ["unit1"]
        assert "unit2" not in svc.sim.phones  # type: ignore[union-attr]
        async with a.client("unit2") as gone:
            assert_error(await gone.get("/api/me"), 401)
        # Its sessions are revoked, so its open event streams close (token-revoked).
        assert stream.is_set()
        assert all(t.revoked_at is not None for t in await svc.auth.list_tokens("unit2"))
        assert_error(await login(a, "unit2", "unit2-pw"), 401, "bad-credentials")
        async with a.client("disp1") as d:
            r = await d.post("/api/sim/phones/unit1/dial", json={"to": "1002"})
            assert r.status_code == 200
            await eventually(lambda: state(svc, "unit1") == "idle")  # refused: unreachable


async def test_groups_rooms_and_roles(tmp_path: Path) -> None:
    async with centre(tmp_path) as a, a.client("adm1") as c:
        svc = a.svc
        r = await c.post(
            "/api/groups",
            json={"id": "south", "members": ["unit1", "unit3"], "number": "803", "mode": "ptt"},
        )
        assert r.status_code == 201, r.text
        assert r.json() == {
            "id": "south",
            "name": "south",
            "members": ["unit1", "unit3"],
            "number": "803",
            "mode": "ptt",
        }
        r = await c.post("/api/groups", json={"id": "west", "members": ["ghost"]})
        assert "unknown user 'ghost'" in assert_error(r, 422, "invalid-directory")["message"]
        r = await c.patch("/api/groups/south", json={"members": ["unit3"]})
        assert r.json()["members"] == ["unit3"]
        # A dial-in room: live at once, and not removable while a meeting is open in it.
        r = await c.post("/api/rooms", json={"id": "briefing", "number": "3001"})
        assert r.status_code == 201, r.text
        assert (await c.post("/api/sim/phones/unit1/dial", json={"to": "3001"})).status_code == 200
        await eventually(lambda: state(svc, "unit1") == "meeting")
        assert_error(await c.delete("/api/rooms/briefing"), 409, "room-in-use")
        assert (await c.delete("/api/meetings/briefing")).status_code == 200
        await eventually(lambda: state(svc, "unit1") == "idle")
        assert (await c.delete("/api/rooms/briefing")).status_code == 200
        assert [x["id"] for x in (await c.get("/api/rooms")).json()] == ["ops"]
        # A role, given to a new user, and what a provisioner may not grant.
        r = await c.post(
            "/api/roles",
            json={
                "name": "duty",
                "permissions": ["start", "call", "ptt", "provision"],
                "max_priority": "flash",
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["max_priority"] == "FLASH" and not r.json()["builtin"]
        assert (await c.post("/api/users", json={**NEW_UNIT, "role": "duty"})).status_code == 201
        assert (await login(a, "unit9", "unit9-pw")).status_code == 200
        async with a.client("unit9") as duty:
            r = await duty.post("/api/roles", json={"name": "boss", "permissions": ["*"]})
            assert_error(r, 403, "privilege-escalation")
            r = await duty.patch("/api/users/unit3", json={"role": "supervisor"})
            assert_error(r, 403, "privilege-escalation")
            assert (await duty.patch("/api/users/unit3", json={"name": "E3"})).status_code == 200
        assert_error(await c.delete("/api/roles/duty"), 409, "role-in-use")
        # A built-in role's first change adds a table that extends it.
        r = await c.patch("/api/roles/field", json={"permissions": ["monitor"]})
        assert r.status_code == 200, r.text
        assert {"start", "call", "ptt", "monitor"} <= set(r.json()["permissions"])
        assert r.json()["configured"] and r.json()["max_priority"] == "PRIORITY"
        assert (await c.delete("/api/roles/field")).status_code == 200
        assert "monitor" not in (await c.get("/api/roles/field")).json()["permissions"]


async def test_the_config_seeds_the_store_then_the_store_is_the_truth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = data_with_admin(tmp_path)
    async with centre(tmp_path, data) as a, a.client("adm1") as c:
        assert (await c.post("/api/users", json=NEW_UNIT)).status_code == 201
        assert (await c.patch("/api/users/unit1", json={"name": "Engine 1"})).status_code == 200
        assert (await c.delete("/api/users/unit3")).status_code == 200
    # The file changes too: unit1 renamed there as well (differently), a user added.
    data = data_with_admin(tmp_path)
    unit1 = next(u for u in data["users"] if u["id"] == "unit1")
    unit1["name"] = "Pumper 1"
    data["users"].append({"id": "unit8", "numbers": ["1008"], "password": "unit8-pw"})
    async with centre(tmp_path, data) as a, a.client("adm1") as c:
        users = {u["id"]: u for u in (await c.get("/api/users")).json()}
        assert users["unit9"]["name"] == "Engine 9"  # created over the API: kept
        assert users["unit1"]["name"] == "Engine 1"  # changed over the API: the store's
        assert "unit3" not in users  # removed over the API: stays removed
        assert "unit8" in users  # new in the file: seeded
        assert (await login(a, "unit9", "unit9-pw")).status_code == 200
        assert "unit3" not in (await c.get("/api/groups/north")).json()["members"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "user 'unit1' differs between the config and the store; the store's is used" in str(
        warnings
    )
    assert any("user 'unit3' is in the config but was removed over the API" in w for w in warnings)


async def test_the_api_docs_show_provisioning(tmp_path: Path) -> None:
    async with centre(tmp_path) as a, a.client("adm1") as c:
        paths = (await c.get("/openapi.json")).json()["paths"]
        assert {"post", "get"} <= set(paths["/api/rooms"])
        assert {"patch", "delete"} <= set(paths["/api/users/{user_id}"])
        assert {"post", "get"} <= set(paths["/api/roles"])
        assert {"patch", "delete", "get"} <= set(paths["/api/groups/{group_id}"])


async def test_a_user_the_core_still_holds_is_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The idle check and the core's own agree in practice; if the core refuses anyway (a claim
    # landing in between), the answer is the same 409 and nothing changes.
    async with centre(tmp_path) as a, a.client("adm1") as c:

        def refuse(user: Any) -> None:
            raise ValueError(f"{user.id} is held by a claim")

        monkeypatch.setattr(a.svc.manager, "remove_user", refuse)
        err = assert_error(await c.delete("/api/users/unit3"), 409, "user-busy")
        assert err["message"] == "unit3 is held by a claim: try again later"
        assert a.svc.config.user("unit3") is not None
        assert "unit3" in (await c.get("/api/groups/north")).json()["members"]
        (entry,) = await audit(a, "user.delete")
        assert entry["outcome"] == "failed"


async def test_a_role_with_a_misspelt_permission_is_refused(tmp_path: Path) -> None:
    # As in the config file (docs/service.md, "Roles and permissions"): a permission neither
    # the service nor a flow names would grant nothing. Over the API it was stored and
    # answered 201; now 422 invalid-directory naming it.
    async with centre(tmp_path) as a, a.client("adm1") as c:
        r = await c.post("/api/roles", json={"name": "duty", "permissions": ["call", "barge-in"]})
        err = assert_error(r, 422, "invalid-directory")
        assert "roles.duty.permissions[1]: unknown permission 'barge-in'" in err["message"], err
        assert_error(await c.get("/api/roles/duty"), 404)
        r = await c.patch("/api/roles/field", json={"permissions": ["monitr"]})
        assert_error(r, 422, "invalid-directory")
        r = await c.post("/api/roles", json={"name": "duty", "permissions": ["call", "barge_in"]})
        assert r.status_code == 201, r.text
