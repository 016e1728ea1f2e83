"""Custom flows as plug-ins: loaded from the config, listed and started like library flows."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from baton.core import Flow
from baton.core.events import Event, FlowStarted
from baton.flows import LIBRARY
from baton.flows.registry import PluginError, load_flows
from baton.service.config import ConfigError, load_config
from baton.service.runtime import Service

from .helpers import FAST_HASHER, api, config_data, eventually, make_config

PLUGIN = '''
"""A company's flows."""
from baton.core import Priority, Session, User, flow

@flow(priority=Priority.IMMEDIATE, permission="escort")
async def wake_up(s: Session, who: User, rings: int = 2) -> str:
    """Ring a user until they answer."""
    await s.claim(who)
    await s.dial(who)
    return f"{who.id} is awake"

@flow()
async def second(s: Session) -> None:
    """Another one."""
'''


def _plugin(tmp_path: Path, name: str = "acme_flows", body: str = PLUGIN) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return folder


def test_load_flows_from_a_module_a_single_flow_and_a_folder(tmp_path: Path) -> None:
    folder = _plugin(tmp_path)
    flows = load_flows(["acme_flows"], paths=[folder], entry_points=False)
    assert {"wake_up", "second"} <= set(flows)
    assert set(LIBRARY) <= set(flows)
    one = load_flows(["acme_flows:wake_up"], paths=[folder], entry_points=False)
    assert "wake_up" in one and "second" not in one


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module", "cannot import 'no_such_module'"),
        ("acme_flows:nothing", "has no 'nothing'"),
        ("clashing_flows", "flow 'call' is already defined by the library"),
        ("empty_flows", "defines no flow"),
    ],
)
def test_plugin_errors_name_the_plugin(tmp_path: Path, ref: str, message: str) -> None:
    folder = _plugin(tmp_path)
    _plugin(
        tmp_path,
        "clashing_flows",
        "from baton.core import flow\n@flow()\nasync def call(s): pass\n",
    )
    _plugin(tmp_path, "empty_flows", "x = 1\n")
    with pytest.raises(PluginError, match=message) as info:
        load_flows([ref], paths=[folder], entry_points=False)
    assert info.value.where.startswith("flows.plugins[0]")


def test_a_broken_plugin_stops_the_service_with_the_key_named(tmp_path: Path) -> None:
    config = make_config(tmp_path, flows={"plugins": ["no_such_module"]})
    with pytest.raises(ConfigError, match=r"flows.plugins\[0\] \(no_such_module\): cannot import"):
        Service(config, hasher=FAST_HASHER)


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    _plugin(tmp_path)
    import tomllib  # noqa: F401 - the config is TOML

    data = config_data(tmp_path, flows={"plugins": ["acme_flows"], "paths": ["plugins"]})
    toml = tmp_path / "baton.toml"
    toml.write_text(_to_toml(data))
    config = load_config(toml)
    assert config.flows.paths == ((tmp_path / "plugins").resolve(),)


@pytest.mark.realtime
async def test_a_plugin_flow_is_listed_and_started_like_a_library_flow(tmp_path: Path) -> None:
    folder = _plugin(tmp_path)
    roles = {"dispatcher": {"permissions": ["call", "escort"], "max_priority": "FLASH"}}
    overrides = {"flows": {"plugins": ["acme_flows"], "paths": [str(folder)]}, "roles": roles}
    async with api(tmp_path, **overrides) as (svc, a), a.client("disp1") as c:
        lib = {f["name"]: f for f in (await c.get("/api/library")).json()}
        wake = lib["wake_up"]
        assert wake["description"] == "Ring a user until they answer."
        assert [(p["name"], p["kind"], p["required"]) for p in wake["params"]] == [
            ("who", "user", True),
            ("rings", "integer", False),
        ]
        assert wake["allowed"]
        # The flow is caught as it starts: a quick one may have ended, and left the manager's
        # table, before the POST's answer is read.
        started: dict[str, Flow] = {}

        def catch(ev: Event) -> None:
            if isinstance(ev, FlowStarted):
                started[ev.flow] = svc.manager.flows[ev.flow]

        stop = svc.manager.events.subscribe(catch)
        r = await c.post("/api/flows", json={"flow": "wake_up", "args": {"who": "unit1"}})
        stop()
        assert r.status_code == 201, r.text
        flow = started[r.json()["name"]]
        assert await eventually(lambda: flow.ended, what="the flow ends")
        assert flow.value == "unit1 is awake"


def _to_toml(data: dict[str, object]) -> str:
    """Just enough TOML for the test's config (strings, numbers, lists, tables)."""
    import json

    lines: list[str] = []
    tables: list[tuple[str, dict[str, object]]] = []
    arrays: list[tuple[str, list[dict[str, object]]]] = []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            arrays.append((k, v))
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    for name, table in tables:
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for name, items in arrays:
        for item in items:
            lines.append(f"[[{name}]]")
            for k, v in item.items():
                if isinstance(v, dict):
                    lines.append(
                        f"{k} = {{ "
                        + ", ".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
                        + " }"
                    )
                else:
                    lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"
