"""Who is recorded: the ``[recording]`` table read as questions about a user or a group.

The rules add up: a user's calls are recorded if the user is a position (``positions``), has
one of the ``roles``, or is named in ``users`` — unless named in ``exclude``. An emergency is
recorded whatever those say (``emergencies``): a user held at EMERGENCY is recorded from that
moment until the call ends. PTT talk bursts are recorded per group (``ptt``, narrowed by
``groups``), and in any group whose emergency state is on (``emergencies``).
"""

from __future__ import annotations

from dataclasses import dataclass

from baton.service.config import Config, RecordingConfig

__all__ = ["Policy"]


@dataclass(frozen=True, slots=True)
class Policy:
    rules: RecordingConfig
    positions: frozenset[str]
    roles: dict[str, str]  # user id -> role

    @classmethod
    def of(cls, config: Config) -> Policy:
        return cls(
            config.recording,
            frozenset(u.id for u in config.positions),
            {u.id: u.role for u in config.users},
        )

    def reasons(self, user: str) -> list[str]:
        """Why every call of ``user`` is recorded (empty: it is not)."""
        r = self.rules
        if user in r.exclude:
            return []
        out = []
        if r.positions and user in self.positions:
            out.append("position")
        if self.roles.get(user) in r.roles:
            out.append("role")
        if user in r.users:
            out.append("user")
        return out

    def ptt(self, group: str | None, *, emergency: bool = False) -> list[str]:
        """Why the talk bursts of ``group`` (a configured group id, or ``None`` for a PTT
        group started over the API) are recorded (empty: they are not)."""
        r = self.rules
        out = []
        if r.ptt and (not r.groups or group in r.groups):
            out.append("ptt")
        if emergency and r.emergencies:
            out.append("emergency")
        return out
