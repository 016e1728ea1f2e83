"""The config: valid files load; every problem is reported with the key that holds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from baton.core import Priority
from baton.service.cli import DEMO_CONFIG
from baton.service.config import (
    FEATURE_NUMBERS,
    ConfigError,
    load_config,
    parse_config,
    parse_priority,
)
from baton.service.routing.router import FEATURE_CODES
from baton.service.switches import sim_behaviour

from .helpers import config_data, make_config

ROOT = Path(__file__).resolve().parents[2]


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "t.toml")
    return info.value.problems


def test_the_shipped_configs_load() -> None:
    # make run's data is the repository's var/ (paths are read from the file's folder); the
    # built-in demo's is var/ of the folder it runs in (baton serve loads it so)
    for path, switch, data in (
        (ROOT / "examples" / "demo.toml", "sip", f"{ROOT}/var/"),
        (DEMO_CONFIG, "sim", "var/"),
    ):
        config = load_config(path, base=Path.cwd()) if path == DEMO_CONFIG else load_config(path)
        assert config.switch == switch, path  # make run: real phones; --sim: virtual ones
        assert config.positions, path
        assert config.api.host == "127.0.0.1"
        assert config.database.startswith(f"sqlite+aiosqlite:///{Path.cwd() / data}"), path
        assert str(config.recordings).startswith(str(Path.cwd() / data)), path
    example = load_config(ROOT / "examples" / "demo.toml")
    # make run: desk phones over UDP and TCP, the console's browser phone over ws: (loopback)
    assert example.sip == {
        "listen": ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "ws:127.0.0.1:5062"],
        "realm": "baton",
    }
    assert [g.mode for g in example.groups if g.id == "engines-ptt"] == ["ptt"]
    assert (
        "trainee" in example.all_roles
        and example.all_roles["trainee"].max_priority == Priority.PRIORITY
    )
    assert example.recording.retention_days == 90 and example.recording.positions


def test_the_recording_policy_names_known_users_roles_and_groups(tmp_path: Path) -> None:
    assert make_config(tmp_path).recording.model_dump() == {
        "positions": True,
        "roles": (),
        "users": (),
        "exclude": (),
        "ptt": True,
        "groups": (),
        "emergencies": True,
        "retention_days": 0.0,
        "sweep_every": 3600.0,
    }
    data = config_data(
        tmp_path,
        recording={"users": ["ghost"], "roles": ["chief"], "groups": ["south"], "exclude": ["x"]},
    )
    assert problems(data) == [
        "recording.users[0]: unknown user 'ghost'",
        "recording.exclude[0]: unknown user 'x'",
        "recording.roles[0]: unknown role 'chief'",
        "recording.groups[0]: unknown group 'south'",
    ]
    assert problems(config_data(tmp_path, recording={"retention_days": -1})) == [
        "recording.retention_days: input should be greater than or equal to 0"
    ]


def test_a_missing_password_is_named_by_its_key(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    del data["users"][2]["password"]
    assert problems(data) == ["users[2].password: field required"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["users"][0]["role"] = "wizard"
    data["users"][1]["numbers"] = ["1001"]  # unit1's
    data["groups"][0]["members"] = ["unit1", "ghost"]
    data["meetings"].append({"id": "ops", "number": "3001"})
    found = problems(data)
    assert any(p.startswith("users[0].role: unknown role 'wizard'") for p in found)
    assert any(
        p.startswith("users[4].numbers[0]: number '1001' is already used by user 'disp2'")
        for p in found
    )
    assert "groups[0].members[1]: unknown user 'ghost'" in found
    assert "meetings[1].id: duplicate meeting id 'ops'" in found


def test_unknown_keys_and_bad_types_are_refused(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["users"][0]["passwrd"] = "x"
    data["api"] = {"listen": "127.0.0.1:80a"}
    data["sim"] = {"answer_after": "soon"}
    found = problems(data)
    assert "users[0].passwrd: unknown key (misspelt?)" in found
    assert any(p.startswith("api: listen must be HOST:PORT") for p in found)
    assert any(p.startswith("sim.answer_after: ") for p in found)


def test_the_api_listens_on_loopback_unless_made_public(tmp_path: Path) -> None:
    found = problems(config_data(tmp_path, api={"listen": "0.0.0.0:8080"}))
    assert found and found[0].startswith("api: listen '0.0.0.0:8080' is not a loopback address")
    config = parse_config(config_data(tmp_path, api={"listen": "0.0.0.0:8080", "public": True}))
    assert (config.api.host, config.api.port) == ("0.0.0.0", 8080)
    assert parse_config(config_data(tmp_path, api={"listen": "[::1]:9000"})).api.host == "::1"


def test_database_urls(tmp_path: Path) -> None:
    def url(value: str) -> str:
        return parse_config(config_data(tmp_path, database=value)).database

    assert url("var/x.db") == "sqlite+aiosqlite:///var/x.db"
    assert url("sqlite:///var/x.db") == "sqlite+aiosqlite:///var/x.db"
    assert url("postgresql://u:p@localhost/baton") == "postgresql+asyncpg://u:p@localhost/baton"
    assert url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
    found = problems(config_data(tmp_path, database="mysql://x/y"))
    assert found[0].startswith("database: unsupported database 'mysql'")


def test_number_is_an_alias_and_priorities_have_names(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["users"][4] = {
        "id": "unit1",
        "number": "1001",
        "password": "p",
        "max_priority": "flash-override",
    }
    config = parse_config(data)
    unit1 = config.user("unit1")
    assert unit1 is not None and unit1.numbers == ("1001",)
    assert unit1.max_priority == Priority.FLASH_OVERRIDE
    assert parse_priority("Emergency") == 50 and parse_priority(35) == 35
    with pytest.raises(ValueError, match="unknown priority"):
        parse_priority("urgent")
    with pytest.raises(ValueError):
        parse_priority(True)


def test_the_sip_table_passes_through_untouched(tmp_path: Path) -> None:
    sip = {"listen": ["udp:127.0.0.1:5060"], "realm": "r", "anything": {"nested": [1, 2]}}
    assert parse_config(config_data(tmp_path, sip=sip)).sip == sip


def test_dispatch_numbers_need_positions_and_known_users(tmp_path: Path) -> None:
    data = config_data(tmp_path, dispatch={"number": "1001", "overflow": "transfer"})
    found = problems(data)
    assert "dispatch: overflow = 'transfer' needs overflow_to (a user id)" in found[0]
    data = config_data(tmp_path, dispatch={"number": "1001", "overflow_to": "ghost"})
    found = problems(data)
    assert "dispatch.number: number '1001' is already used by user 'unit1'" in found
    assert "dispatch.overflow_to: unknown user 'ghost'" in found


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("switch = \n")
    with pytest.raises(ConfigError, match="TOML syntax"):
        load_config(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ConfigError) as info:
        load_config(empty)
    assert info.value.problems == ["users: field required"]


def test_a_bad_table_does_not_hide_the_problems_across_tables(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["api"] = {"listen": "0.0.0.0:8080"}  # not loopback, public not set
    data["users"][0]["role"] = "wizard"
    found = problems(data)
    assert any(p.startswith("api: listen '0.0.0.0:8080' is not a loopback address") for p in found)
    assert any(p.startswith("users[0].role: unknown role 'wizard'") for p in found)


def test_a_builtin_role_table_extends_the_role_unless_it_replaces_it(tmp_path: Path) -> None:
    data = config_data(tmp_path, roles={"dispatcher": {"permissions": ["escort"]}})
    role = parse_config(data, "t.toml").all_roles["dispatcher"]
    assert "escort" in role.permissions and "call" in role.permissions
    assert role.max_priority == Priority.EMERGENCY and role.position
    data = config_data(
        tmp_path, roles={"dispatcher": {"permissions": ["call"], "max_priority": "PRIORITY"}}
    )
    role = parse_config(data, "t.toml").all_roles["dispatcher"]
    assert role.max_priority == Priority.PRIORITY and "emergency" in role.permissions
    data = config_data(
        tmp_path, roles={"dispatcher": {"permissions": ["call"], "replace": True, "position": True}}
    )
    role = parse_config(data, "t.toml").all_roles["dispatcher"]
    assert role.permissions == ("call",) and role.max_priority == Priority.ROUTINE


def test_a_sip_table_without_a_switch_selects_the_sip_switch(tmp_path: Path) -> None:
    data = config_data(tmp_path, sip={"listen": ["udp:127.0.0.1:5060"]})
    del data["switch"]
    assert parse_config(data, "t.toml").switch == "sip"
    data["switch"] = "sim"  # said explicitly: virtual phones, the table kept for later
    assert parse_config(data, "t.toml").switch == "sim"


def test_a_users_srtp_policy_is_checked(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["users"][0]["srtp"] = "yes"
    (problem,) = problems(data)
    assert problem.startswith("users[0].srtp: ") and "'required'" in problem
    data["users"][0]["srtp"] = "required"
    config = parse_config(data, "t.toml")
    assert [u.srtp for u in config.users][:2] == ["required", None]  # None: the [sip] srtp


def test_a_bad_entry_does_not_hide_the_problems_across_tables(tmp_path: Path) -> None:
    # docs/service.md, Configuration: a missing password, an unknown member and a public
    # listen address are reported together, not one run after another.
    data = config_data(tmp_path)
    data["api"] = {"listen": "0.0.0.0:8080"}
    del data["users"][2]["password"]
    data["users"][3]["numbers"] = "not a list"
    data["groups"][0]["members"] = ["unit1", "ghost"]
    data["roles"] = {"wizard": {"max_priority": "SUPERURGENT"}}
    found = problems(data)
    assert "users[2].password: field required" in found
    assert any(p.startswith("users[3].numbers: ") for p in found)
    assert any(p.startswith("roles.wizard.max_priority: unknown priority") for p in found)
    assert "groups[0].members[1]: unknown user 'ghost'" in found
    assert any(p.startswith("api: listen '0.0.0.0:8080' is not a loopback address") for p in found)
    # Nothing invented by the stand-ins for the bad entries.
    assert not any("unknown role" in p or "duplicate" in p for p in found), found


def test_a_user_without_an_id_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    del data["users"][1]["id"]
    data["users"][1]["password"] = ""
    data["groups"][0]["members"] = ["ghost"]
    found = problems(data)
    assert "users[1].id: field required" in found
    assert any(p.startswith("users[1].password: ") for p in found)
    assert "groups[0].members[0]: unknown user 'ghost'" in found


def test_a_tables_own_check_is_not_hidden_by_a_bad_key_in_it(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["api"] = {"listen": "0.0.0.0:8080", "session_hours": -1}
    found = problems(data)
    assert any(p.startswith("api.session_hours: ") for p in found)
    assert any(p.startswith("api: listen '0.0.0.0:8080' is not a loopback address") for p in found)


def test_a_centre_whose_only_user_is_bad_gets_that_users_problems_only(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["users"] = [{"id": "a b", "password": "p"}]
    data["recording"] = {"users": ["zz"]}
    data["groups"] = [{"id": "g", "members": ["ghost"]}]
    data["dispatch"] = {}
    data["meetings"] = []
    found = problems(data)
    assert found[0].startswith("users[0].id: 'a b' is not a valid name: 1 to 64 letters"), found
    assert not any("at least 1 item" in p for p in found), found
    assert "groups[0].members[0]: unknown user 'ghost'" in found
    assert "recording.users[0]: unknown user 'zz'" in found


def test_a_bad_key_is_named_once_not_also_as_missing(tmp_path: Path) -> None:
    # The bad id is left out so the checks across tables still run; that must not add
    # "users[0].id: field required" about an id the file does give.
    data = config_data(tmp_path)
    data["users"][0]["id"] = "a b"
    data["users"][0]["numbers"] = ["12a"]
    found = problems(data)
    assert [p for p in found if p.startswith("users[0].")] == [
        "users[0].id: 'a b' is not a valid name: 1 to 64 letters, digits, '_', '.' or '-', "
        "starting with a letter or a digit",
        "users[0].numbers: '12a' is not a dialable number (digits, *, #, +)",
    ], found


def test_a_phone_table_without_its_own_delay_answers_after_the_sims(tmp_path: Path) -> None:
    data = config_data(tmp_path, sim={"answer_after": 0.2})
    data["users"][4]["sim"] = {"hangup_after": 10}  # unit1: hangs up, answers as [sim] says
    data["users"][5]["sim"] = {"answer_after": 4}  # unit2: its own delay
    config = parse_config(data)
    unit1, unit2 = config.users[4], config.users[5]
    assert sim_behaviour(unit1.sim, config.sim.answer_after).answer_after == 0.2
    assert sim_behaviour(unit2.sim, config.sim.answer_after).answer_after == 4


def test_durations_are_finite_and_a_session_lasts_at_most_a_year(tmp_path: Path) -> None:
    # An infinite or absurd duration passed --check and then broke at run time (every login a
    # 500: a session of 1e308 hours has no cookie age); --check now names it.
    data = config_data(
        tmp_path,
        api={"session_hours": 1e308},
        dispatch={"number": "100", "queue_timeout": float("inf"), "wrap_up": float("nan")},
    )
    found = problems(data)
    assert any(
        p.startswith("api.session_hours: input should be less than or equal to") for p in found
    ), found
    assert "dispatch.queue_timeout: input should be a finite number" in found
    assert "dispatch.wrap_up: input should be a finite number" in found
    assert parse_config(config_data(tmp_path, api={"session_hours": 24 * 366})).api.session_hours


def test_a_path_that_is_not_text_is_named_in_words(tmp_path: Path) -> None:
    found = problems(config_data(tmp_path, recordings=["var"], prompts=5))
    assert "recordings: a path (text) is expected" in found, found
    assert "prompts: a path (text) is expected" in found, found


def test_a_number_may_not_be_a_feature_code(tmp_path: Path) -> None:
    # The feature codes are routed first (docs/service.md, "The numbering plan"): a dispatcher
    # number "*70" passed --check and then logged positions out, or gave anyone else the busy
    # tone, instead of queueing the caller.
    data = config_data(tmp_path, dispatch={"number": "*70"})
    data["users"][4]["numbers"] = ["*72"]
    found = problems(data)
    assert "dispatch.number: number '*70' is already used by the feature code *70 (log out)" in (
        found
    ), found
    assert any(p.startswith("users[4].numbers[0]: number '*72' is already used by") for p in found)
    assert set(FEATURE_NUMBERS) == set(FEATURE_CODES)  # the router's codes, all of them
