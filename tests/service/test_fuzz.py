"""No request can crash the server: a property-based fuzz of the start-flow endpoint (and the
command endpoint) with arbitrary JSON, on a running service."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baton.flows import LIBRARY

from .helpers import api, assert_error

PARAMS = sorted({p for spec in LIBRARY.values() for p in list(spec.signature.parameters)[1:]})
IDS = [
    "disp1",
    "disp2",
    "sup1",
    "unit1",
    "unit2",
    "unit3",
    "unit4",
    "engines",
    "dispatch",
    "ghost",
    "",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(IDS)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
BODY = st.fixed_dictionaries(
    {"flow": st.sampled_from([*LIBRARY, "teleport", ""]) | st.text(max_size=10)},
    optional={
        "args": st.dictionaries(st.sampled_from([*PARAMS, "bogus"]), JSON, max_size=6) | JSON,
        "priority": st.none()
        | st.sampled_from(["ROUTINE", "FLASH", "EMERGENCY", "flash-override", "x"])
        | st.integers(-5, 2000),
        "bogus": JSON,
    },
)
ALLOWED = {201, 403, 404, 409, 422}
USERS = ["disp1", "disp2", "sup1", "unit1", "unit2", "unit3", "unit4"]


def _plausible_value(kind: str, choices: tuple[str, ...] | None) -> st.SearchStrategy[Any]:
    """A value of roughly the right kind (so that many starts get through conversion)."""
    if kind == "user":
        return st.sampled_from(USERS)
    if kind == "users":
        return st.sampled_from(["engines", "north"]) | st.lists(
            st.sampled_from(USERS), max_size=3, unique=True
        )
    if kind == "resource":
        return st.just("dispatch")
    if kind in ("enum", "priority") and choices:
        return st.sampled_from(list(choices))
    if kind == "integer":
        return st.integers(0, 60)
    if kind in ("number", "duration"):
        return st.floats(0, 3)
    if kind == "boolean":
        return st.booleans()
    return st.text(max_size=4) | st.none()


@st.composite
def plausible(draw: st.DrawFn) -> dict[str, Any]:
    from baton.flows import DispatcherQueue
    from baton.service.flows.convert import describe

    spec = LIBRARY[draw(st.sampled_from(sorted(LIBRARY)))]
    args: dict[str, Any] = {}
    for p in describe(spec, [DispatcherQueue]):
        if p.required or draw(st.booleans()):
            args[p.name] = draw(
                _plausible_value(p.kind, p.choices)
                | (JSON if draw(st.integers(0, 9)) == 0 else st.nothing())
            )
    body: dict[str, Any] = {"flow": spec.name, "args": args}
    if draw(st.booleans()):
        body["priority"] = draw(st.sampled_from(["ROUTINE", "PRIORITY", "FLASH", "EMERGENCY", 35]))
    return body


async def _run(bodies: list[dict[str, Any]], commands: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with api(Path(tmp), "disp1", "sup1") as (svc, a), a.client("sup1") as c:
            for body in bodies:
                r = await c.post("/api/flows", json=body)
                if r.status_code != 201:
                    assert r.status_code in ALLOWED, (body, r.status_code, r.text)
                    assert_error(r, r.status_code)
            for flow in list(svc.manager.flows):
                for command, args in commands:
                    r = await c.post(
                        f"/api/flows/{flow.replace('#', '%23')}/commands",
                        json={"command": command, "args": args},
                    )
                    assert r.status_code in {200, 403, 404, 409, 422, 504}, (command, args, r.text)
                    if r.status_code != 200:
                        assert_error(r, r.status_code)
            assert (await c.get("/api/health")).json()["ok"]
            assert (await c.get("/api/users")).status_code == 200


@pytest.mark.realtime
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(BODY | plausible() | plausible(), min_size=10, max_size=25),
    st.lists(
        st.tuples(
            st.sampled_from(["end", "add", "mute", "request", "x", "leave", "redial"]),
            st.dictionaries(st.sampled_from(["user", "x"]), SCALARS, max_size=2) | JSON,
        ),
        max_size=3,
    ),
)
def test_the_start_endpoint_answers_every_request_with_a_documented_error(
    bodies: list[dict[str, Any]], commands: list[tuple[str, Any]]
) -> None:
    asyncio.run(_run(bodies, commands))
