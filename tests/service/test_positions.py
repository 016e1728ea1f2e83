"""Positions and presence: agent states, registrations, feature codes, the queue consulting
them (virtual time on the sim), and their API and metrics (a running service)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from baton.core import User
from baton.core.events import Event
from baton.flows import LIBRARY, DispatcherQueue, call
from baton.service.positions.flows import hang_up
from baton.service.positions.service import AgentState, Positions
from baton.service.routing import Router
from baton.switch.sim import never_answers, unreachable
from baton.testing import World

from .helpers import Api, api, assert_error, eventually, make_config, running


class Centre:
    """The test config's users on a World, with positions, the queue and the numbering plan."""

    def __init__(self, tmp_path: Path, *, wrap_up: float = 0.0, **queue_kw: Any) -> None:
        config = make_config(tmp_path)
        self.w = w = World()
        for u in config.users:
            w.add(User(u.id, name=u.display_name, numbers=u.numbers, keep=u.keep))
        self.audit: list[dict[str, Any]] = []
        users = [w[u.id] for u in config.positions]
        self.positions = Positions(
            w.manager,
            w.sim,
            users,
            wallclock=lambda: 1_800_000_000.0 + w.manager.now(),
            audit=lambda **kw: self.audit.append(kw),
            kick=lambda: self.queue.kick(),
            offered=lambda u: self.queue.offered_to(u) is not None,
            wrap_up=wrap_up,
        )
        self.queue = DispatcherQueue(
            "dispatch",
            w.manager,
            users,
            timeout=300,
            ready=self.positions.is_ready,
            on_missed=self.positions.missed,
            **queue_kw,
        )
        self.started: list[str] = []
        w.manager.router = Router(
            config,
            LIBRARY,
            queue=lambda: self.queue,
            started=lambda f, who: self.started.append(f),
            positions=self.positions,
        )

    def state(self, user: str) -> str:
        return self.positions.state_of(user).value


async def test_a_caller_is_put_through_to_the_free_registered_position(tmp_path: Path) -> None:
    # Issue 13's finding: disp1 busy, disp2 with no phone registered, sup1 free.
    c = Centre(tmp_path)
    w = c.w
    w.behave("disp2", unreachable())
    await w.start(call, w["disp1"], w["unit3"]).result()
    assert c.state("disp1") == "busy" and c.state("disp2") == "ready"
    assert not c.positions.is_ready(w["disp2"])  # ready, but no phone: not offered calls
    w.sim.call_in("unit1", "100")
    await w.run(10)
    assert w.hears("unit1") == {"sup1"}
    assert w.sim.phones["disp2"].calls == 0
    assert c.queue.snapshot().offers_failed == 0
    w.assert_ok()
    await w.close()


async def test_an_emergency_call_passes_over_unregistered_positions(tmp_path: Path) -> None:
    """disp1 busy in a routine call, disp2 and sup1 with no phone registered: a call to the
    emergency number was dropped (Unreachable from disp2). Now it preempts disp1's call."""
    c = Centre(tmp_path)
    w = c.w
    w.behave("disp2", unreachable())
    w.behave("sup1", unreachable())
    await w.start(call, w["disp1"], w["unit3"]).result()
    w.sim.call_in("unit1", "112")
    await w.run(10)
    assert w.hears("unit1") == {"disp1"}
    assert "tone:preemption" in w.heard("unit3")
    assert w.sim.phones["disp2"].calls == 0 or w.owner("disp2") is None
    w.assert_ok()
    await w.close()


async def test_emergency_order_rings_ready_positions_then_registered_then_the_rest(
    tmp_path: Path,
) -> None:
    c = Centre(tmp_path)
    w = c.w
    w.behave("disp1", unreachable())
    c.positions.set("disp2", AgentState.NOT_READY, reason="break", by="disp2")
    order = c.positions.emergency_order([w["disp1"], w["disp2"], w["sup1"]])
    assert [u.id for u in order] == ["sup1", "disp2", "disp1"]
    await w.close()


async def test_feature_codes_set_the_agent_state_and_the_queue_follows(tmp_path: Path) -> None:
    c = Centre(tmp_path)
    w = c.w
    seen: list[Event] = []
    w.manager.events.subscribe(lambda e: seen.append(e) if e.kind == "agent.state" else None)
    for d in ("disp1", "disp2", "sup1"):
        w.sim.call_in(d, "*72")
    await w.run(3)
    assert {c.state(d) for d in ("disp1", "disp2", "sup1")} == {"not_ready"}
    assert c.positions.view("disp1")["reason"] == "break"
    assert "tone:confirm" in w.heard("disp1") and w.state("disp1") == "idle"
    assert c.audit[0] == {
        "principal": "disp1",
        "role": "dispatcher",
        "action": "agent.state",
        "target": "disp1",
        "outcome": "ok",
        "details": {"state": "not_ready", "reason": "break", "via": "phone"},
    }
    w.sim.call_in("unit1", "100")
    await w.run(30)
    assert w.hears("unit1") == {"tone:hold"}  # nobody ready: the caller waits with music
    w.sim.call_in("disp2", "*71")
    await w.run(10)
    assert w.hears("unit1") == {"disp2"}
    assert c.state("disp2") == "busy"
    last = seen[-1].to_dict()
    assert (last["user"], last["state"], last["via"]) == ("disp2", "ready", "phone")
    # A user who is not a position hears the busy tone; nothing changes.
    w.sim.call_in("unit3", "*71")
    await w.run(3)
    assert "tone:busy" in w.heard("unit3") and len(c.audit) == 4
    w.assert_ok()
    await w.close()


async def test_a_missed_offer_puts_the_position_in_not_ready(tmp_path: Path) -> None:
    c = Centre(tmp_path, ring_timeout=10)
    w = c.w
    w.behave("disp1", never_answers())
    for d in ("disp2", "sup1"):
        c.positions.set(d, "not_ready", reason="training", by=d)
    w.sim.call_in("unit1", "100")
    await w.run(12)
    assert c.state("disp1") == "not_ready"
    assert c.positions.view("disp1")["reason"] == "missed a queued call"
    assert w.hears("unit1") == {"tone:hold"}  # still queued, not dropped
    c.positions.set("sup1", "ready", by="sup1")
    await w.run(5)
    assert w.hears("unit1") == {"sup1"}
    w.assert_ok()
    await w.close()


async def test_a_position_whose_line_fails_goes_not_ready_and_the_caller_is_requeued(
    tmp_path: Path,
) -> None:
    # disp1's phone dies mid-call: the caller goes back to the queue (music), disp1 is put in
    # not ready (no wrap-up: the call did not end normally), and sup1 takes the caller.
    c = Centre(tmp_path, wrap_up=30)
    w = c.w
    c.positions.set("disp2", "logged_out", by="disp2")
    c.positions.set("sup1", "not_ready", reason="training", by="sup1")
    w.sim.call_in("unit1", "100")
    await w.run(5)
    assert w.hears("unit1") == {"disp1"}
    w.sim.kill("disp1")
    await w.run(3)
    assert w.hears("unit1") == {"tone:hold"}  # back in the queue, not dropped
    assert c.state("disp1") == "not_ready"
    assert c.positions.view("disp1")["reason"] == "line lost on a queued call (media_timeout)"
    c.positions.set("sup1", "ready", by="sup1")
    await w.run(5)
    assert w.hears("unit1") == {"sup1"}
    assert c.queue.snapshot().requeued == 1
    w.assert_ok()
    await w.close()


async def test_wrap_up_follows_a_call_then_ready_again(tmp_path: Path) -> None:
    c = Centre(tmp_path, wrap_up=30)
    w = c.w
    for d in ("disp2", "sup1"):
        c.positions.set(d, "logged_out", by=d)
    w.sim.call_in("unit1", "100")
    await w.run(5)
    assert w.hears("unit1") == {"disp1"}
    w.sim.hang_up("unit1")
    await w.run(1)
    assert c.state("disp1") == "wrap_up"
    w.sim.call_in("unit2", "100")
    await w.run(20)
    assert w.hears("unit2") == {"tone:hold"}  # wrap-up: not offered yet
    await w.run(15)
    assert c.state("disp1") == "busy" and w.hears("unit2") == {"disp1"}
    w.assert_ok()
    await w.close()


@pytest.mark.realtime
async def test_positions_registration_and_queue_in_the_api_and_metrics(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "sup1") as (svc, a), a.client("disp1") as c:
        users = {u["id"]: u for u in (await c.get("/api/users")).json()}
        assert users["unit1"]["registration"]["registered"] is True
        contact = users["unit4"]["registration"]["contacts"][0]
        assert contact == {
            "contact": "sim:unit4",
            "transport": "sim",
            "user_agent": "Baton virtual phone",
        }
        assert users["disp1"]["agent"]["state"] == "ready"
        assert "agent" not in users["unit1"]

        r = await c.put("/api/positions/disp1/state", json={"state": "not ready"})
        assert r.status_code == 200 and r.json()["label"] == "Not ready (break)"
        assert r.json()["since"].endswith("+00:00")
        assert_error(
            await c.put("/api/positions/disp2/state", json={"state": "ready"}), 403, "forbidden"
        )
        assert_error(
            await c.put("/api/positions/disp1/state", json={"state": "busy"}),
            422,
            "bad-agent-state",
        )
        r = await c.put("/api/positions/disp1/state", json={"state": "bogus"})
        assert_error(r, 422, "bad-agent-state")
        assert r.json()["error"]["details"] == {"field": "state"}
        async with a.client("sup1") as s:
            r = await s.put(
                "/api/positions/disp2/state", json={"state": "not_ready", "reason": "lunch"}
            )
            assert r.status_code == 200
            positions = {p["id"]: p for p in (await s.get("/api/positions")).json()}
            assert positions["disp2"]["agent"]["reason"] == "lunch"
            assert positions["sup1"]["registrations"][0]["contact"] == "sim:sup1"
            await svc.journal.sync()
            audit = (await s.get("/api/audit", params={"action": "agent.state"})).json()
            assert {(e["principal"], e["target"]) for e in audit} == {
                ("disp1", "disp1"),
                ("sup1", "disp2"),
            }

        svc.positions.set("sup1", "logged_out", by="sup1")
        assert svc.sim is not None
        svc.sim.call_in("unit1", "100")
        await eventually(lambda: svc.queue().callers(), what="unit1 queued")
        q = (await c.get("/api/queue")).json()
        assert [x["caller"] for x in q["callers"]] == ["unit1"]
        assert q["figures"]["waiting"] == 1 and q["figures"]["requeued"] == 0
        text = (await c.get("/metrics")).text
        assert 'baton_user_registered{user="unit1"} 1' in text
        assert 'baton_position_state{position="disp1",state="not_ready"} 1' in text
        assert 'baton_queue_waiting{queue="dispatch"} 1' in text
        assert 'baton_queue_requeued_total{queue="dispatch"} 0' in text
        assert "baton_queue_longest_wait_seconds" in text
        assert 'baton_positions{state="logged_out"} 1' in text

        # Pick up (the console's button): the queue offers the call to the one who asked.
        async with a.client("sup1") as s:
            r = await s.post(
                "/api/flows",
                json={
                    "flow": "take_call",
                    "args": {"dispatcher": "sup1", "queue": "dispatch", "caller": "unit1"},
                },
            )
            assert r.status_code in (200, 201), r.text
        unit1 = svc.manager.user("unit1")
        await eventually(lambda: svc.manager.rec(unit1).bridge is svc.manager.user("sup1"))
        figures = (await c.get("/api/queue")).json()["figures"]
        assert (figures["waiting"], figures["answered"]) == (0, 1)


async def test_hang_up_ends_a_settled_call_and_keeps_the_line(tmp_path: Path) -> None:
    c = Centre(tmp_path)
    w = c.w
    await w.start(call, w["disp1"], w["unit1"]).result()
    assert (w.owner("disp1") or "").startswith("p2p")
    f = w.start(hang_up, w["disp1"], priority=1)
    assert await f.result() == "hung up"
    await w.run(1)
    assert w.state("unit1") == "idle"
    assert w.state("disp1") == "connected" and w.owner("disp1") is None  # the line stays up
    assert w.hears("disp1") == set()
    w.assert_ok()
    await w.close()


@pytest.mark.parametrize("when", ["while taken", "as granted"])
async def test_hang_up_whose_other_party_hangs_up_at_once_still_ends_the_call(when: str) -> None:
    """The console's Hang up on a field user; the other party puts the phone down while the
    call is being taken (or in the instant it is granted). The user is hung up all the same —
    before, the claim (or the next operation) raised ``UserHungUp``, the flow failed and the
    user, pulled out of the call, sat on the line in silence until the leak collector."""
    w = World("a", "b", latency={"clear": 0.4} if when == "while taken" else None)
    await w.start(call, w["a"], w["b"]).result()
    f = w.start(hang_up, w["a"], priority=1)
    if when == "while taken":
        await w.run(0.2)
    else:
        await asyncio.sleep(0)  # the claim is granted in this tick; the hang-up lands next
    w.sim.hang_up("b")
    await w.run(1)
    assert f.outcome == "completed" and f.value == "hung up"
    assert w.sim.leg_of("a") is None  # hung up by the flow, not by the leak collector
    await w.run(10)
    assert not w.kinds("leg.collected")
    w.assert_ok(quiescent=True)
    await w.close()


@pytest.mark.realtime
async def test_hang_up_from_the_console(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "unit1") as (svc, a), a.client("disp1") as c:
        assert svc.sim is not None
        svc.sim.call_in("unit2", "2001")  # unit2 calls disp1, who answers
        await eventually(lambda: svc.manager.state_of(svc.manager.user("unit2")) == "talking")
        async with a.client("unit1") as u:
            assert_error(await u.post("/api/users/disp1/hangup"), 403, "forbidden")
        r = await c.post("/api/users/disp1/hangup")
        assert r.status_code == 200, r.text
        assert svc.manager.state_of(svc.manager.user("unit2")) in ("idle", "connected")
        await eventually(lambda: svc.manager.state_of(svc.manager.user("unit2")) == "idle")
        assert_error(await c.post("/api/users/unit3/hangup"), 403, "forbidden")


@pytest.mark.realtime
async def test_an_emergency_alarm_is_acknowledged_once_and_audited(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "sup1", "unit1") as (svc, a), a.client("disp1") as c:
        assert svc.sim is not None
        svc.sim.call_in("unit3", "112")
        (alarm,) = await eventually(lambda: svc.alarms.all(), what="the alarm")
        assert alarm["name"] == "emergency_inbound" and "acknowledged_by" not in alarm
        ack = f"/api/emergencies/{alarm['flow'].replace('#', '%23')}/ack"
        async with a.client("unit1") as u:
            assert_error(await u.post(ack), 403, "not-a-position")
        r = await c.post(ack)
        assert r.status_code == 200, r.text
        assert r.json()["acknowledged_by"] == "disp1"
        async with a.client("sup1") as s:
            err = assert_error(await s.post(ack), 409, "already-acknowledged")
            assert err["message"] == "disp1 has already acknowledged this emergency"
            assert err["details"]["acknowledged_by"] == "disp1"  # for a client, not only a human
            assert err["details"]["acknowledged_at"] == r.json()["acknowledged_at"]
            await svc.journal.sync()
            audit = (await s.get("/api/audit", params={"action": "emergency.ack"})).json()
            assert [(e["principal"], e["target"]) for e in audit] == [("disp1", alarm["flow"])]


@pytest.mark.realtime
async def test_agent_states_survive_a_restart(tmp_path: Path) -> None:
    async with running(tmp_path) as svc:
        svc.positions.set("disp1", "not_ready", reason="lunch", by="disp1")
        svc.positions.set("disp2", "logged_out", by="sup1")
        svc.positions.set("disp2", "ready", by="disp2")
        svc.positions.set("sup1", "logged_out", by="sup1")
        await svc.journal.sync()
    async with running(tmp_path) as svc:
        assert svc.positions.view("disp1")["label"] == "Not ready (lunch)"
        assert svc.positions.state_of("disp2").value == "ready"
        assert svc.positions.state_of("sup1").value == "logged_out"


async def test_an_emergency_nobody_acknowledges_is_escalated(tmp_path: Path) -> None:
    from baton.flows import emergency_call
    from baton.service.positions.alarms import Alarms

    c = Centre(tmp_path)
    w = c.w
    audit: list[dict[str, Any]] = []
    alarms = Alarms(
        w.manager,
        wallclock=lambda: 1_800_000_000.0,
        started_at=lambda _: None,
        audit=lambda **kw: audit.append(kw),
        escalate_after=30,
    )
    first = w.start(emergency_call, w["disp1"], w["unit1"])
    second = w.start(emergency_call, w["disp2"], w["unit2"])
    await w.run(10)
    alarms.acknowledge(second.name, "disp2")
    await w.run(25)
    views = {a["flow"]: a for a in alarms.all()}
    assert views[first.name].get("escalated") is True
    assert "escalated" not in views[second.name]  # acknowledged in time
    assert [e.to_dict()["flow"] for e in w.kinds("emergency.escalated")] == [first.name]
    assert [(a["action"], a["target"]) for a in audit] == [
        ("emergency.ack", second.name),
        ("emergency.escalate", first.name),
    ]
    for f in (first, second):
        await f.send("end", by="sup1")
    await w.run(5)
    assert alarms.all() == []
    alarms.close()
    await w.close()


@pytest.mark.realtime
async def test_logging_out_while_a_queued_call_rings_passes_it_on_at_once(
    tmp_path: Path,
) -> None:
    # A dispatcher ends the shift while a queued call rings at the position: the phone stops
    # ringing and the next ready position is offered the call at once — not after the
    # ring timeout (60 s here), the caller hearing the music all along.
    dispatch = {"number": "100", "ring_timeout": 60, "queue_timeout": 300}
    async with api(tmp_path, "disp1", "sup1", dispatch=dispatch) as (svc, a):
        async with a.client("sup1") as c:
            r = await c.put("/api/sim/phones/disp1/behaviour", json={"behaviour": "never_answers"})
            assert r.status_code == 200, r.text
            for d in ("disp2", "sup1"):
                r = await c.put(f"/api/positions/{d}/state", json={"state": "not_ready"})
                assert r.status_code == 200, r.text
            r = await c.post("/api/sim/phones/unit1/dial", json={"to": "100"})
            assert r.status_code == 200, r.text
        q = svc.queue()
        assert q is not None
        unit1, disp1 = svc.manager.user("unit1"), svc.manager.user("disp1")
        await eventually(lambda: q.offered_to(disp1) is unit1, within=10)
        async with a.client("sup1") as c:
            r = await c.put("/api/positions/sup1/state", json={"state": "ready"})
        async with a.client("disp1") as c:
            r = await c.put("/api/positions/disp1/state", json={"state": "logged_out"})
            assert r.status_code == 200, r.text
        callinfo = await eventually(
            lambda: svc.manager.callinfo_of(unit1), within=10, what="sup1 answering"
        )
        assert callinfo.peer_of(unit1).id == "sup1"
        assert svc.manager.state_of(disp1) == "idle"  # its phone stopped ringing
        assert svc.positions.state_of("disp1") is AgentState.LOGGED_OUT


@pytest.mark.realtime
async def test_signing_out_of_the_last_console_session_logs_the_position_out(
    tmp_path: Path,
) -> None:
    """A dispatcher who signs out of the console has left: the position goes *logged out*,
    so the queue offers it nothing, rather than staying *ready* and letting the next caller
    ring out there first. Signing out of one of two sessions, or a token's revocation, leaves
    the agent state alone."""
    async with api(tmp_path, "disp1", "disp2") as (svc, a):
        second = Api(svc)
        await second.login("disp1")
        assert svc.positions.state_of("disp1") is AgentState.READY
        async with a.client("disp1") as c:
            assert (await c.post("/api/logout")).status_code == 204
        assert svc.positions.state_of("disp1") is AgentState.READY  # still signed in elsewhere
        async with second.client("disp1") as c:
            assert (await c.post("/api/logout")).status_code == 204
        assert svc.positions.state_of("disp1") is AgentState.LOGGED_OUT
        assert svc.positions.view("disp1")["by"] == "disp1"
        # an API token of a position is no console session: revoking it changes nothing
        async with a.client("disp2") as c:
            r = await c.post("/api/tokens", json={"label": "wallboard"})
            assert r.status_code == 201, r.text
            token = r.json()["token"]
        a.tokens["wallboard"] = token
        async with a.client("wallboard") as c:
            assert (await c.post("/api/logout")).status_code == 204
        assert svc.positions.state_of("disp2") is AgentState.READY
