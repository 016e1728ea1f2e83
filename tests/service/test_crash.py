"""After ``kill -9`` (issue 14, finding 10): the run's heartbeat dates the crash, so the next
start closes the dead run's records at that time with ``crash`` — not at each record's last
event — and hands the switch the calls the dead run left, to end them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from baton.flows import call
from baton.service.runtime import Service
from baton.service.store.records import LegFilter, list_flows, list_legs
from baton.service.store.tables import runs
from baton.service.switches import DialogKeeper
from baton.switch.sim import SimSwitch, answers

from .helpers import FAST_HASHER, crash, eventually, make_config

pytestmark = pytest.mark.realtime


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class KeepingSwitch(SimSwitch):
    """A sim switch that keeps its calls like a SIP switch keeps dialogs."""

    ended: list[Any]

    def dialogs(self) -> list[Any]:
        return [{"call_id": f"{u}@sim"} for u in sorted(self.phones) if u == "unit1"]

    async def end_dialogs(self, dialogs: list[Any]) -> int:
        type(self).ended = [*getattr(type(self), "ended", []), *dialogs]
        return len(dialogs)


def _service(tmp_path: Path, clock: Clock) -> Service:
    config = make_config(tmp_path)
    switch = KeepingSwitch(default=answers(0.05))
    for u in config.users:
        switch.add_phone(u.id)
    return Service(config, switch=switch, hasher=FAST_HASHER, wallclock=clock, heartbeat=0.02)


async def _heartbeat(svc: Service) -> float | None:
    async with svc.store.read() as conn:
        value = await conn.scalar(sa.select(runs.c.heartbeat_at).where(runs.c.id == svc.run_id))
    return None if value is None else float(value)


async def test_records_of_a_crashed_run_end_at_its_last_heartbeat(tmp_path: Path) -> None:
    assert isinstance(KeepingSwitch(), DialogKeeper)
    clock = Clock()
    svc = _service(tmp_path, clock)
    await svc.start()
    m = svc.manager
    flow = m.start(call, m.user("disp1"), m.user("unit1"))
    await flow.wait()
    await eventually(lambda: m.state_of(m.user("unit1")) == "talking")
    await svc.journal.sync()
    talking_since = clock.now
    # 19 s of quiet talk: no event, only heartbeats.
    clock.now += 19
    await eventually(lambda: _is(svc, clock.now), what="a heartbeat at the new time")
    crashed_at = clock.now
    await crash(svc)

    clock.now += 60  # the restart comes a minute later
    again = _service(tmp_path, clock)
    await again.start()
    try:
        async with again.store.read() as conn:
            legs = await list_legs(conn, LegFilter(user="unit1"))
            flows = await list_flows(conn, name="call")
            states = [
                (r.end_reason, r.ended_at)
                for r in await conn.execute(sa.select(runs).order_by(runs.c.id))
            ]
        (leg,) = [r for r in legs if r["run_id"] == svc.run_id]
        # Before: the record ended at its last event (talking_since), 19 s early.
        assert leg["end_reason"] == "crash" and leg["ended_at"] == crashed_at
        assert leg["ended_at"] - talking_since == 19
        assert states[0] == ("crashed", crashed_at) and states[1] == (None, None)
        assert all(f["ended_at"] is not None for f in flows)
        # The calls the dead run left were handed to the switch to end, once.
        assert KeepingSwitch.ended == [{"call_id": "unit1@sim"}]
    finally:
        await again.stop()
    third = _service(tmp_path, clock)
    await third.start()
    await third.stop()
    assert KeepingSwitch.ended == [{"call_id": "unit1@sim"}]


async def _is(svc: Service, at: float) -> bool:
    return await _heartbeat(svc) == at
