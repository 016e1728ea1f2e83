"""A subset of the flow library's tests, run on the ``sip`` adapter with SIPp phones.

Every user is a SIPp UAS on loopback (a static contact) that answers Baton's INVITE and waits
for its BYE — expecting ``Reason: preemption`` where the flow preempts it. Each case drives a
library flow through the core and checks the signalling (every phone got exactly one call and
the right BYE) and, in the engine, who is bridged to whom or who is in the meeting in which mode.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from _rigs.sip import (
    Rig,
    U,
    free_port,
    rig,
    sipp,
    sipp_procs,
    wait_until,
)
from baton.core.port import MeetingMode
from baton.flows import barge_in, call, emergency_call, monitor, whisper

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

SCENARIOS = Path(__file__).parent / "scenarios"

USERS = ("disp", "alice", "bob", "boss")


def leg(r: Rig, user: str) -> str:
    found = r.switch.leg_of(user)
    assert found is not None, f"{user} has no leg"
    return found


def modes(r: Rig, *users: str) -> dict[str, MeetingMode]:
    """The meeting mode of each user's leg (all must be in the same meeting)."""
    meetings = {r.switch.meeting_of(leg(r, u)) for u in users}
    assert len(meetings) == 1 and None not in meetings, meetings
    (meeting,) = meetings
    assert meeting is not None
    members = r.switch.media.mixer.meeting_members(meeting)
    return {u: members[leg(r, u)].mode for u in users}


async def two_party(r: Rig) -> None:
    """alice and bob in a P2P, set up by the library's ``call``."""
    await r.manager.start(call, r.user("alice"), r.user("bob")).result()
    assert r.switch.bridged_to(leg(r, "alice")) == leg(r, "bob")


async def case_call(r: Rig) -> set[str]:
    await two_party(r)
    assert r.manager.callinfo_of(r.user("alice")) is r.manager.callinfo_of(r.user("bob"))
    return {"alice", "bob"}


async def case_barge_in(r: Rig) -> set[str]:
    await two_party(r)
    f = r.manager.start(barge_in, r.user("disp"), r.user("alice"))
    await wait_until(lambda: r.switch.leg_state(r.switch.leg_of("disp") or "") == "connected")
    await wait_until(lambda: r.switch.meeting_of(leg(r, "alice")) is not None)
    assert modes(r, "disp", "alice", "bob") == dict.fromkeys(("disp", "alice", "bob"),
                                                             MeetingMode.SPEAK)  # fmt: skip
    await f.send("leave")
    await f.result()
    assert r.switch.bridged_to(leg(r, "alice")) == leg(r, "bob")  # back to two-way
    assert r.switch.meeting_of(leg(r, "disp")) is None
    return {"disp", "alice", "bob"}


async def case_monitor(r: Rig) -> set[str]:
    await two_party(r)
    f = r.manager.start(monitor, r.user("disp"), r.user("alice"))
    await wait_until(lambda: r.switch.leg_of("disp") is not None
                     and r.switch.meeting_of(leg(r, "disp")) is not None)  # fmt: skip
    assert modes(r, "disp", "alice", "bob") == {
        "disp": MeetingMode.LISTEN, "alice": MeetingMode.SPEAK, "bob": MeetingMode.SPEAK,
    }  # fmt: skip
    await f.send("leave")
    await f.result()
    assert r.switch.bridged_to(leg(r, "alice")) == leg(r, "bob")
    return {"disp", "alice", "bob"}


async def case_whisper(r: Rig) -> set[str]:
    await two_party(r)
    f = r.manager.start(whisper, r.user("disp"), r.user("alice"))
    await wait_until(lambda: r.switch.leg_of("disp") is not None
                     and r.switch.meeting_of(leg(r, "disp")) is not None)  # fmt: skip
    assert modes(r, "disp", "alice", "bob")["disp"] is MeetingMode.WHISPER
    meeting = r.switch.meeting_of(leg(r, "disp"))
    assert meeting is not None
    member = r.switch.media.mixer.meeting_members(meeting)[leg(r, "disp")]
    assert member.whisper_to == leg(r, "alice")  # only alice hears the dispatcher
    await f.send("leave")
    await f.result()
    return {"disp", "alice", "bob"}


async def case_emergency(r: Rig) -> set[str]:
    """An emergency call takes alice out of her call with bob: bob hears the preemption tone
    and is hung up with ``Reason: preemption`` (his SIPp checks it); alice talks to boss."""
    await two_party(r)
    f = r.manager.start(emergency_call, r.user("boss"), r.user("alice"))
    await wait_until(lambda: r.switch.leg_of("boss") is not None
                     and r.switch.bridged_to(leg(r, "alice")) == leg(r, "boss"), 20)  # fmt: skip
    await wait_until(lambda: r.switch.leg_of("bob") is None, 20)  # released after the tone
    f.cancel()
    return {"alice", "bob", "boss"}


CASES: dict[str, tuple[Callable[[Rig], Awaitable[set[str]]], set[str]]] = {
    # name: (the case, the users whose BYE must carry Reason: preemption)
    "call": (case_call, set()),
    "barge_in": (case_barge_in, set()),
    "monitor": (case_monitor, set()),
    "whisper": (case_whisper, set()),
    "emergency_preempts_a_call": (case_emergency, {"bob"}),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_library_flow_on_sip(tmp_path: Path, name: str) -> None:
    case, preempted = CASES[name]
    ports = {u: free_port() for u in USERS}
    users = [U(u, (str(2000 + i),), contact=f"sip:{u}@127.0.0.1:{ports[u]}")
             for i, u in enumerate(USERS)]  # fmt: skip
    async with rig(users, grace=60) as r, sipp_procs() as procs:
        phones = {}
        for u in USERS:
            script = "uas_answer_preempted.xml" if u in preempted else "uas_answer.xml"
            phones[u] = await sipp(procs, ["-sf", str(SCENARIOS / script), "-m", "1"], tmp_path,
                                   port=ports[u], listening=True)  # fmt: skip
        called = await case(r)
        await r.manager.close()  # stop every flow; the switch then hangs up what is left
        await r.switch.close()
        for u in called:
            assert await phones[u].wait() == 0, f"{u}: {phones[u].output}"
        for u in set(USERS) - called:
            assert phones[u].process is not None and phones[u].process.returncode is None
