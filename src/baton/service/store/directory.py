"""The directory in the store: users, groups, meeting rooms and roles as provisioned.

Rule (docs/service.md, "Provisioning")
--------------------------------------
The config file *seeds* the directory; the store is the truth after that, entry by entry:

* an entry (a user, group, room or role, by id) the store has never seen is taken from the
  config and stored — on the first start that is every entry, later only the ones added to the
  file since;
* an entry the store has is used as the store has it, whatever the file now says about it (a
  change over the API is not undone by a restart); where the file differs, one warning per entry
  says so;
* an entry removed over the API stays removed (its row is kept, ``data`` null): deleting it
  from the file is then tidy-up, and leaving it there brings nothing back;
* entries created over the API are added to the file's.

:func:`load_directory` applies the rule at start and returns the merged :class:`Config`, checked
across tables like the file itself (a clash — a number the file gives to a new user that an API
user already has — stops start-up with a :class:`ConfigError` naming it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from baton.service.config import (
    Config,
    ConfigError,
    GroupConfig,
    MeetingConfig,
    RoleConfig,
    UserConfig,
    cross_check,
)
from baton.service.store.tables import directory

__all__ = [
    "KINDS",
    "Entry",
    "entries_of",
    "entry_data",
    "load_directory",
    "with_entries",
    "write_entry",
]

#: The kinds of entries, and the model each one's ``data`` validates as.
KINDS: dict[str, type[BaseModel]] = {
    "user": UserConfig,
    "group": GroupConfig,
    "room": MeetingConfig,
    "role": RoleConfig,
}


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    id: str
    model: BaseModel


def entry_data(model: BaseModel) -> dict[str, Any]:
    """An entry as stored: JSON values, only the keys that were given (so a default changed in a
    later version applies to entries that never chose, and a role table still extends its
    built-in by exactly the keys it sets)."""
    return model.model_dump(mode="json", exclude_unset=True)


def entries_of(config: Config) -> list[Entry]:
    """The config's directory, in its order."""
    out = [Entry("user", u.id, u) for u in config.users]
    out += [Entry("group", g.id, g) for g in config.groups]
    out += [Entry("room", m.id, m) for m in config.meetings]
    out += [Entry("role", name, r) for name, r in config.roles.items()]
    return out


def with_entries(config: Config, entries: list[Entry]) -> Config:
    """``config`` with its directory replaced by ``entries`` (not checked across tables)."""
    return config.model_copy(
        update={
            "users": tuple(e.model for e in entries if e.kind == "user"),
            "groups": tuple(e.model for e in entries if e.kind == "group"),
            "meetings": tuple(e.model for e in entries if e.kind == "room"),
            "roles": {e.id: e.model for e in entries if e.kind == "role"},
        }
    )


async def write_entry(
    conn: AsyncConnection, kind: str, id: str, model: BaseModel | None, *, at: float, by: str | None
) -> None:
    """Store an entry (``model`` None: removed)."""
    values = {
        "data": None if model is None else entry_data(model),
        "removed_at": at if model is None else None,
        "updated_at": at,
        "updated_by": by,
    }
    key = (directory.c.kind == kind) & (directory.c.id == id)
    done = await conn.execute(sa.update(directory).where(key).values(**values))
    if not done.rowcount:
        await conn.execute(sa.insert(directory).values(kind=kind, id=id, **values))


async def load_directory(
    conn: AsyncConnection, config: Config, *, at: float
) -> tuple[Config, list[str]]:
    """Apply the rule of the module docstring: seed what is new, read the rest. Returns the
    merged config and the warnings (one line each) about entries where the file and the store
    differ."""
    rows = {(r.kind, r.id): r for r in (await conn.execute(sa.select(directory))).all()}
    merged: list[Entry] = []
    warnings: list[str] = []
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for entry in entries_of(config):
        key = (entry.kind, entry.id)
        seen.add(key)
        row = rows.get(key)
        if row is None:
            await write_entry(conn, entry.kind, entry.id, entry.model, at=at, by=None)
            merged.append(entry)
            continue
        if row.data is None:
            warnings.append(
                f"{entry.kind} {entry.id!r} is in the config but was removed over the API; "
                "it stays removed (delete it from the file, or create it again over the API)"
            )
            continue
        stored = _model(entry.kind, entry.id, row.data, problems)
        if stored is None:
            continue
        if stored != entry.model:
            warnings.append(
                f"{entry.kind} {entry.id!r} differs between the config and the store; the "
                "store's is used (it was changed over the API: change it there)"
            )
        merged.append(Entry(entry.kind, entry.id, stored))
    for key in sorted(k for k in rows if k not in seen and rows[k].data is not None):
        stored = _model(key[0], key[1], rows[key].data, problems)
        if stored is not None:
            merged.append(Entry(key[0], key[1], stored))
    if problems:
        raise ConfigError("the store's directory", problems)
    out = with_entries(config, merged)
    problems = cross_check(out)
    if problems:
        raise ConfigError(f"{config.source} with the store's directory", problems)
    return out, warnings


def _model(kind: str, id: str, data: Any, problems: list[str]) -> BaseModel | None:
    try:
        return KINDS[kind].model_validate(data)
    except ValidationError as exc:
        problems += [f"{kind} {id!r}: {e['msg']}" for e in exc.errors()]
        return None
