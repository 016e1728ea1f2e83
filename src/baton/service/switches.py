"""Choosing the switch from the config: ``switch = "sim"`` or ``switch = "sip"``.

The rest of the service only sees the :class:`~baton.core.port.Switch` port, so adding an
adapter is one entry in :data:`FACTORIES`.

The SIP adapter is found by name: ``baton.switch.sip`` must provide
``create_switch(sip: Mapping[str, Any], users: Sequence[UserConfig]) -> Switch`` — the ``[sip]``
table untouched and the configured users (ids, numbers, passwords for digest authentication,
static contacts). Until it does, ``switch = "sip"`` stops start-up with a message saying so.

A switch may report operational figures for ``/metrics`` with a ``metrics()`` method returning
``{name: value}`` (e.g. ``late_media_frames_total``, ``registrations``); they are exported as
``baton_switch_<name>``.

After a crash, the phones of the dead run's calls are still in them; only the switch knows how to
tell them (a SIP ``BYE`` needs the dialog's Call-ID, tags, CSeq, remote target and route set). A
switch that can takes part with two optional methods (:class:`DialogKeeper`): ``dialogs()``
returns its calls now as JSON-ready data, which the service's heartbeat writes beside the run;
``end_dialogs(dialogs)``, awaited once at the next start, ends those a crashed run left.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from baton.core.port import Switch
from baton.service.config import Config, ConfigError, SimPhoneConfig
from baton.switch.sim import (
    Behaviour,
    SimSwitch,
    answers,
    busy,
    never_answers,
    rejects,
    unreachable,
)

__all__ = [
    "FACTORIES",
    "DialogKeeper",
    "PeerTrunk",
    "UserDirectory",
    "build_switch",
    "check_switch_users",
    "sim_behaviour",
    "switch_metrics",
    "sync_switch_users",
]


@runtime_checkable
class DialogKeeper(Protocol):
    """A switch whose calls can be ended after a crash (see the module docstring)."""

    def dialogs(self) -> list[Any]:
        """The switch's calls now, JSON-ready (what :meth:`end_dialogs` needs to end them)."""
        ...

    async def end_dialogs(self, dialogs: list[Any]) -> int:
        """End calls a previous run left (``dialogs`` as :meth:`dialogs` gave them); return how
        many were ended. Called once, after :meth:`~baton.core.port.Switch.start`."""
        ...


@runtime_checkable
class UserDirectory(Protocol):
    """A switch whose users can change while it runs (provisioning; docs/service.md)."""

    def set_users(self, users: Sequence[Any], *, dry_run: bool = False) -> None:
        """The users from now on (as ``create_switch`` takes them); a removed user's
        registrations end. Raises ``ValueError`` (with ``problems``) changing nothing when one
        is unusable; ``dry_run`` only checks."""
        ...


@runtime_checkable
class PeerTrunk(Protocol):
    """A switch that reaches the other tenants of a cluster (docs/cluster.md, "Calls between
    tenants"): its peer lines are users of the core; a call to another tenant's number is a
    call to a free line, pointed at that number first."""

    @property
    def peer_lines(self) -> tuple[str, ...]: ...

    @property
    def peer_numbers(self) -> tuple[str, ...]: ...

    def dial_peer(self, line: str, number: str) -> None: ...


def check_switch_users(switch: Switch, config: Config) -> list[str]:
    """What the switch would refuse of ``config``'s users (empty: nothing)."""
    if isinstance(switch, UserDirectory):
        try:
            switch.set_users(config.users, dry_run=True)
        except ValueError as exc:
            return list(getattr(exc, "problems", None) or [str(exc)])
    return []


def sync_switch_users(switch: Switch, old: Config, new: Config) -> None:
    """Give the switch ``new``'s users: on the sim, phones for new users (and new behaviours),
    none for removed ones; a :class:`UserDirectory` switch is handed the list."""
    if isinstance(switch, SimSwitch):
        before = {u.id: u for u in old.users}
        after = {u.id for u in new.users}
        for gone in before.keys() - after:
            switch.remove_phone(gone)
        for user in new.users:
            was = before.get(user.id)
            if was is None or user.id not in switch.phones:
                switch.add_phone(user.id, sim_behaviour(user.sim, new.sim.answer_after))
            elif was.sim != user.sim:
                switch.behave(user.id, sim_behaviour(user.sim, new.sim.answer_after))
    elif isinstance(switch, UserDirectory):
        switch.set_users(new.users)


def sim_behaviour(phone: SimPhoneConfig | None, default_answer_after: float) -> Behaviour:
    """The scripted behaviour of a virtual phone."""
    if phone is None:
        return answers(default_answer_after)
    b: Behaviour
    if phone.behaviour == "busy":
        b = busy()
    elif phone.behaviour == "never_answers":
        b = never_answers()
    elif phone.behaviour == "rejects":
        b = rejects()
    elif phone.behaviour == "unreachable":
        b = unreachable()
    else:  # the phone's own delay if its table sets one, else [sim] answer_after
        given = "answer_after" in phone.model_fields_set
        b = answers(phone.answer_after if given else default_answer_after)
    if phone.hangup_after is not None:
        b = b.then_hangs_up(phone.hangup_after)
    return b


def _sim(config: Config) -> Switch:
    sim = SimSwitch(default=answers(config.sim.answer_after))
    sim.log_commands = False  # a long-running demo must not grow a command log forever
    for user in config.users:
        sim.add_phone(user.id, sim_behaviour(user.sim, config.sim.answer_after))
    return sim


def _with_tenant(config: Config) -> Mapping[str, Any]:
    """``[sip]`` with ``[sip.peers] tenant`` set to this file's tenant: the others are told whose
    caller a call to them is (docs/cluster.md, "Calls between tenants")."""
    peers = config.sip.get("peers")
    if not isinstance(peers, Mapping):
        return config.sip
    return {**config.sip, "peers": {"tenant": config.tenant, **peers}}


def _sip(config: Config) -> Switch:
    try:
        module = importlib.import_module("baton.switch.sip")
    except ImportError as exc:
        raise ConfigError(
            config.source, [f"switch: the sip adapter cannot be loaded ({exc})"]
        ) from None
    factory = getattr(module, "create_switch", None)
    if factory is None:
        raise ConfigError(
            config.source,
            [
                "switch: the sip adapter is not available in this build yet "
                '(baton.switch.sip has no create_switch); use switch = "sim" or baton serve --sim'
            ],
        )
    try:
        switch = factory(_with_tenant(config), config.users)
    except ValueError as exc:  # the adapter's SipConfigError: one "key: message" per problem
        problems = getattr(exc, "problems", None) or [str(exc)]
        raise ConfigError(
            config.source, [f"sip.{p}" if not p.startswith("sip") else p for p in problems]
        ) from None
    if not isinstance(switch, Switch):
        raise TypeError(f"baton.switch.sip.create_switch returned {switch!r}, not a Switch")
    return switch


#: switch name → factory.
FACTORIES: dict[str, Callable[[Config], Switch]] = {"sim": _sim, "sip": _sip}


def build_switch(config: Config) -> Switch:
    """The switch the config names. Raises :class:`ConfigError` if it cannot be built."""
    return FACTORIES[config.switch](config)


def switch_metrics(switch: Switch) -> Mapping[str, float]:
    """What the switch reports for ``/metrics`` (see the module docstring)."""
    report = getattr(switch, "metrics", None)
    if callable(report):
        values: Any = report()
        if isinstance(values, Mapping):
            return {str(k): float(v) for k, v in values.items()}
    if isinstance(switch, SimSwitch):
        # Every virtual phone is "registered"; the sim has no media, so no late frames.
        return {"registrations": float(len(switch.phones))}
    return {}
