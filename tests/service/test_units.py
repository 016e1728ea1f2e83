"""The service's pure parts: argument conversion (with a property-based fuzz), permissions, the
metrics exposition, the event codec, and flow traces (on the sim, in virtual time)."""

from __future__ import annotations

import datetime
import enum
import json
import re
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baton.core import Meeting, Priority, Session, UnknownMeeting, User, flow
from baton.core.events import LegStateChanged, MediaChanged, OwnerChanged, PreemptionCompleted
from baton.flows import LIBRARY, call, emergency_call
from baton.service.auth.permissions import Principal
from baton.service.errors import Forbidden
from baton.service.events.codec import EVENT_TYPES, event_from_dict, event_json
from baton.service.flows.convert import ArgumentError, Resolver, convert, describe, startable
from baton.service.flows.trace import build_trace
from baton.service.metrics import Metrics
from baton.testing import World

USERS = {u: User(u) for u in ("disp1", "unit1", "unit2", "unit3")}


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@flow(priority=Priority.ROUTINE, permission="test")
async def everything(
    s: Session,
    who: User,
    crew: list[User],
    pair: tuple[User, ...],
    room: Meeting,
    colour: Colour,
    level: Priority = Priority.ROUTINE,
    shade: Literal["light", "dark"] = "light",
    count: int = 1,
    after: float = 1.0,
    span: datetime.timedelta = datetime.timedelta(seconds=2),
    loud: bool = False,
    note: str | None = None,
    backup: User | None = None,
) -> None:
    """Every kind of parameter."""


def resolver() -> Resolver:
    def user(uid: str) -> User:
        try:
            return USERS[uid]
        except KeyError:
            from baton.core import UnknownUser

            raise UnknownUser(uid) from None

    def meeting(mid: str) -> Meeting:
        if mid != "m1":
            raise UnknownMeeting(mid)
        return Meeting("m1", None)

    return Resolver(user, meeting, {"crew": ["unit1", "unit2"]}, {})


def test_every_parameter_kind_is_described() -> None:
    params = {p.name: p for p in describe(everything)}
    assert [params[n].kind for n in params] == [
        "user",
        "users",
        "users",
        "meeting",
        "enum",
        "priority",
        "enum",
        "integer",
        "number",
        "duration",
        "boolean",
        "string",
        "user",
    ]
    assert params["colour"].choices == ("red", "blue") and params["colour"].required
    assert params["level"].default == "ROUTINE" and params["shade"].choices == ("light", "dark")
    assert params["after"].unit == "s" and params["count"].unit is None
    assert params["note"].nullable and not params["note"].required
    assert startable(params.values())


def test_conversion_to_typed_values() -> None:
    kwargs = convert(
        everything,
        {
            "who": "disp1",
            "crew": "crew",
            "pair": ["unit1", "unit3"],
            "room": "m1",
            "colour": "BLUE",
            "level": "flash",
            "shade": "dark",
            "count": 3,
            "after": 2,
            "span": 1.5,
            "loud": True,
            "note": None,
            "backup": "unit2",
        },
        resolver(),
    )
    assert kwargs["who"] is USERS["disp1"]
    assert kwargs["crew"] == [USERS["unit1"], USERS["unit2"]]
    assert kwargs["pair"] == (USERS["unit1"], USERS["unit3"])
    assert kwargs["room"].id == "m1" and kwargs["colour"] is Colour.BLUE
    assert kwargs["level"] is Priority.FLASH and kwargs["span"] == datetime.timedelta(seconds=1.5)
    assert kwargs["after"] == 2.0 and isinstance(kwargs["after"], float)
    assert kwargs["note"] is None and kwargs["backup"] is USERS["unit2"]


@pytest.mark.parametrize(
    ("args", "field", "ident"),
    [
        ({"crew": [], "pair": [], "room": "m1", "colour": "red"}, "args.who", "invalid-argument"),
        (
            {"who": "x", "crew": [], "pair": [], "room": "m1", "colour": "red"},
            "args.who",
            "unknown-user",
        ),
        (
            {"who": "disp1", "crew": ["unit1", "unit1"], "pair": [], "room": "m1", "colour": "red"},
            "args.crew",
            "invalid-argument",
        ),
        (
            {"who": "disp1", "crew": [], "pair": [], "room": "m9", "colour": "red"},
            "args.room",
            "unknown-meeting",
        ),
        (
            {"who": "disp1", "crew": [], "pair": [], "room": "m1", "colour": "green"},
            "args.colour",
            "invalid-argument",
        ),
        (
            {"who": "disp1", "crew": [], "pair": [], "room": "m1", "colour": "red", "count": True},
            "args.count",
            "invalid-argument",
        ),
        (
            {"who": "disp1", "crew": [], "pair": [], "room": "m1", "colour": "red", "count": 1.5},
            "args.count",
            "invalid-argument",
        ),
        (
            {"who": "disp1", "crew": [], "pair": [], "room": "m1", "colour": "red", "loud": "yes"},
            "args.loud",
            "invalid-argument",
        ),
        (
            {"who": "disp1", "crew": [], "pair": [], "room": "m1", "colour": "red", "after": 1e300},
            "args.after",
            "invalid-argument",
        ),
        (
            {"who": "disp1", "crew": [], "pair": [], "room": "m1", "colour": "red", "who2": 1},
            "args.who2",
            "invalid-argument",
        ),
        (
            {"who": None, "crew": [], "pair": [], "room": "m1", "colour": "red"},
            "args.who",
            "invalid-argument",
        ),
    ],
)
def test_bad_arguments_name_their_field(args: dict[str, Any], field: str, ident: str) -> None:
    with pytest.raises(ArgumentError) as info:
        convert(everything, args, resolver())
    assert (info.value.field, info.value.id) == (field, ident)


def test_every_library_flow_is_startable_from_the_api() -> None:
    from baton.flows import DispatcherQueue

    for spec in LIBRARY.values():
        params = describe(spec, [DispatcherQueue])
        assert startable(params), spec.name
        assert all(p.kind != "unsupported" for p in params if p.required), spec.name


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
NAMES = st.sampled_from([p.name for p in describe(everything)] + ["x", ""])
IDS = st.sampled_from([*USERS, "crew", "m1", "red", "ghost"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(NAMES, JSON | IDS | st.lists(IDS, max_size=3), max_size=8))
def test_conversion_never_fails_any_other_way(raw: dict[str, Any]) -> None:
    """Whatever JSON arrives, conversion either succeeds or names the bad field."""
    error: ArgumentError | None = None
    try:
        convert(everything, raw, resolver())
    except ArgumentError as exc:
        error = exc
    if error is not None:
        assert error.field == "args" or error.field.startswith("args.")
        assert error.message


def test_permissions_and_priority_caps() -> None:
    disp = Principal(
        "disp1", "D", "dispatcher", frozenset({"call", "emergency", "start"}), 50, "session", "t"
    )
    disp.require("call", "call")
    with pytest.raises(Forbidden) as info:
        disp.require("barge_in", "barge in")
    assert info.value.details == {"permission": "barge_in", "role": "dispatcher"}
    with pytest.raises(Forbidden) as info:
        Principal("u", "U", "field", frozenset({"call"}), 10, "session", "t").require_priority(
            30, "start"
        )
    assert info.value.id == "priority-not-allowed"
    disp.require_control("emergency", 50, "redial")  # a command that does not end it
    with pytest.raises(Forbidden):
        disp.require_control("emergency", 50, None)  # cancelling an emergency
    with pytest.raises(Forbidden):
        disp.require_control("ptt", 10, "clear_emergency")
    boss = Principal("sup1", "S", "supervisor", frozenset({"*"}), 50, "token", "t")
    boss.require_control("emergency", 50, "end")
    boss.require_control("ptt", 10, "clear_emergency")


def test_the_metrics_exposition_format() -> None:
    m = Metrics()
    m.on_event(LegStateChanged(user="a", leg="L1", state="dialling", direction="outbound"))
    m.on_event(
        LegStateChanged(user="a", leg="L1", state="ended", direction="outbound", cause="no_answer")
    )
    m.on_event(PreemptionCompleted(user="a", victim="x", claimer="y", seconds=0.003))
    m.http("GET", '/a"b\\c', 200, 0.02)
    m.gauges(
        lambda: [
            ("baton_x_total", "a counter from outside", (), 2.0),
            ("baton_y", "a gauge", (("q", "n\nl"),), 1.5),
        ]
    )
    text = m.render()
    assert text.endswith("\n")
    line = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+Inf]+$')
    for row in text.splitlines():
        assert row.startswith("# HELP ") or row.startswith("# TYPE ") or line.match(row), row
    assert 'baton_legs_ended_total{cause="no_answer"} 1' in text
    assert 'route="/a\\"b\\\\c"' in text and 'q="n\\nl"' in text
    assert 'baton_preemption_seconds_bucket{le="0.005"} 1' in text
    assert "# TYPE baton_x_total counter" in text and "# TYPE baton_y gauge" in text


def test_events_round_trip_through_json() -> None:
    ev = OwnerChanged(user="a", old=None, new="call#1", epoch=1, reason="claimed", priority=0)
    ev.seq, ev.t = 7, 1.5
    d = json.loads(json.dumps(event_json(ev)))
    assert d["text"].startswith("a: nobody → call#1") and d["marker"] == "⇄"
    assert event_from_dict(d) == ev
    media = event_json(MediaChanged(command="join", users=("a", "b"), meeting="m", by="f"))
    assert event_from_dict(json.loads(json.dumps(media))) == MediaChanged(
        command="join", users=("a", "b"), meeting="m", by="f"
    )
    assert "owner.changed" in EVENT_TYPES and event_from_dict({"kind": "from.the.future"}) is None


async def test_a_preemption_trace_shows_both_flows() -> None:
    w = World("disp1", "disp2", "unit1")
    first = w.start(call, w["disp1"], w["unit1"])
    await w.run(3)
    emergency = w.start(emergency_call, w["disp2"], w["unit1"])
    await w.run(6)
    events = [event_json(e) for e in w.events]
    trace = build_trace(first.name, events)
    assert trace["lifelines"][0] == "call#1" and trace["ended"]
    trace = build_trace(emergency.name, events)
    labels = [(s["from"], s["to"], s["label"]) for s in trace["steps"]]
    assert ("emergency_call#1", "p2p#1", "preempt unit1") in labels
    assert any(s["kind"] == "leg.state" and s["from"] == "switch" for s in trace["steps"])
    assert trace["lifelines"][-1] == "switch" and not trace["ended"]
    assert all(s["t"] >= 0 for s in trace["steps"])
    emergency.send("end", by="sup1")
    await w.run(1)
    await w.close()


def test_prompt_arguments_are_file_names_inside_the_prompts_folder(tmp_path: Path) -> None:
    """A flow's Prompt parameter is a name in the prompts folder, never a client-chosen path."""
    from baton.core.port import Prompt
    from baton.flows import broadcast
    from baton.service.flows.convert import ArgumentError, Resolver, convert, describe

    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "evacuate.wav").write_bytes(b"RIFF")
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    users = {"u1": User("u1")}
    resolver = Resolver(users.__getitem__, lambda m: None, {}, {}, folder)  # type: ignore[arg-type, return-value]
    assert {p.name: p.kind for p in describe(broadcast)}["message"] == "prompt"
    args = convert(broadcast, {"members": ["u1"], "message": "evacuate.wav"}, resolver)
    assert args["message"] == Prompt(str((folder / "evacuate.wav").resolve()))
    for bad in ("../secret.wav", "/etc/passwd", "sub/evacuate.wav", "missing.wav", ".hidden"):
        with pytest.raises(ArgumentError) as info:
            convert(broadcast, {"members": ["u1"], "message": bad}, resolver)
        assert info.value.field == "args.message"
