"""Provisioning: users, groups, meeting rooms and roles created, changed and removed over the API.

Theory of operation
-------------------
The directory is the service's :class:`~baton.service.config.Config` (its ``users``, ``groups``,
``meetings`` and ``roles``); the store keeps it (:mod:`baton.service.store.directory`). A change
builds the whole next directory, checks it as the config file is checked (unique ids and numbers,
known roles and members, the switch's own checks), then — under the service's directory lock, so
changes never interleave —

1. applies it live (:meth:`Service.apply_directory`: the core, the switch, the numbering plan,
   the positions and the queue follow at once; nothing awaits in between, so a user found idle
   is still idle when removed);
2. writes it, with the users table (password hashes) and the audit entry, through the journal,
   and answers once that is durable. A write the store refused is undone live; a write that is
   only slow (503 ``store-unavailable``) stays queued and lands when the store is back, as every
   write does (docs/service.md, The store).

Who may: the ``provision`` permission (built-in role ``admin``). A provisioner grants no more
than it holds: a role it creates or changes, or gives a user, may have only permissions it has
itself and a cap no higher than its own (403 ``privilege-escalation``). Every attempt is in the
audit log (``user.create``, ``group.update``, ``room.delete``, ``role.create`` …; allowed or
denied), with the keys changed — never a password.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from baton.core import UnknownMeeting
from baton.core.priority import priority_name
from baton.service.auth.permissions import Principal
from baton.service.auth.service import password_check
from baton.service.config import (
    BUILTIN_ROLES,
    Config,
    GroupConfig,
    MeetingConfig,
    RoleConfig,
    UserConfig,
    cross_check,
    format_loc,
    unknown_permissions,
)
from baton.service.errors import ApiError, Conflict, Forbidden, NotFound, Unprocessable
from baton.service.runtime import Service
from baton.service.store import StoreUnavailable
from baton.service.store.directory import Entry, entries_of, entry_data, with_entries, write_entry
from baton.service.store.tables import users as users_table
from baton.service.switches import check_switch_users

__all__ = ["KIND_NAMES", "Provisioning", "role_from"]

#: kind → (the word in messages and audit actions, the 404 id)
KIND_NAMES = {
    "user": ("user", "unknown-user"),
    "group": ("group", "unknown-group"),
    "room": ("room", "unknown-room"),
    "role": ("role", "unknown-role"),
}


class Provisioning:
    """The use cases behind ``/api/users``, ``/api/groups``, ``/api/rooms``, ``/api/roles``."""

    def __init__(self, service: Service) -> None:
        self.svc = service

    # ---- reading

    def entries(self, kind: str) -> list[Entry]:
        return [e for e in entries_of(self.svc.config) if e.kind == kind]

    def entry(self, kind: str, id: str) -> Entry:
        for e in self.entries(kind):
            if e.id == id:
                return e
        word, code = KIND_NAMES[kind]
        raise NotFound(f"no {word} {id!r}", id=code, details={kind: id})

    def view(self, entry: Entry) -> dict[str, Any]:
        """An entry as the API shows it: JSON values, unset keys omitted, priorities by name,
        never a password."""
        if entry.kind == "role":
            return self.role_view(entry.id)
        data = entry_data(entry.model)
        data.pop("password", None)
        out: dict[str, Any] = {"id": entry.id, **data}
        if isinstance(entry.model, UserConfig):
            out["name"] = entry.model.display_name
            out["role"] = entry.model.role
            if entry.model.max_priority is not None:
                out["max_priority"] = priority_name(entry.model.max_priority)
        elif isinstance(entry.model, GroupConfig):
            out["name"] = entry.model.name or entry.id
            out["members"] = list(entry.model.members)
            out["mode"] = entry.model.mode
        return out

    def role_view(self, name: str) -> dict[str, Any]:
        roles = self.svc.config.all_roles
        role = roles.get(name)
        if role is None:
            raise NotFound(f"no role {name!r}", id="unknown-role", details={"role": name})
        out: dict[str, Any] = {
            "name": name,
            "permissions": list(role.permissions),
            "max_priority": priority_name(role.max_priority),
            "position": role.position,
            "scope": role.effective_scope,
            "builtin": name in BUILTIN_ROLES,
            "configured": name in self.svc.config.roles,  # a table extends or defines it
            "users": [u.id for u in self.svc.config.users if u.role == name],
        }
        if role.description:
            out["description"] = role.description
        return out

    def roles(self) -> list[dict[str, Any]]:
        return [self.role_view(name) for name in self.svc.config.all_roles]

    # ---- changing

    async def create(
        self, principal: Principal, kind: str, id: str, model: BaseModel, *, remote: str | None
    ) -> dict[str, Any]:
        """Add an entry (``model`` is its config table, validated)."""
        word, _ = KIND_NAMES[kind]

        def change(entries: list[Entry]) -> list[Entry]:
            if any(e.kind == kind and e.id == id for e in entries):
                raise Conflict(
                    f"a {word} {id!r} exists already (change it with PATCH)",
                    id="already-exists",
                    details={kind: id},
                )
            return [*entries, Entry(kind, id, model)]

        fields = sorted(model.model_fields_set - {"password"})
        await self._change(principal, f"{kind}.create", kind, id, change, remote, fields)
        return self.view(self.entry(kind, id)) if kind != "role" else self.role_view(id)

    async def update(
        self,
        principal: Principal,
        kind: str,
        id: str,
        patch: dict[str, Any],
        *,
        remote: str | None,
    ) -> dict[str, Any]:
        def change(entries: list[Entry]) -> list[Entry]:
            out: list[Entry] = []
            found = False
            for e in entries:
                if e.kind == kind and e.id == id:
                    found = True
                    e = Entry(kind, id, _patched(kind, id, e.model, patch))
                out.append(e)
            if not found:
                if kind == "role" and id in BUILTIN_ROLES:  # a first table on a built-in role
                    return [*out, Entry(kind, id, _patched(kind, id, None, patch))]
                self.entry(kind, id)  # raises 404
            return out

        await self._change(principal, f"{kind}.update", kind, id, change, remote, sorted(patch))
        return self.view(self.entry(kind, id)) if kind != "role" else self.role_view(id)

    async def remove(
        self, principal: Principal, kind: str, id: str, *, remote: str | None
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {}

        def change(entries: list[Entry]) -> list[Entry]:
            if kind == "role" and id in BUILTIN_ROLES and id not in self.svc.config.roles:
                raise Conflict(
                    f"{id!r} is a built-in role: it cannot be removed (change it instead)",
                    id="builtin-role",
                    details={"role": id},
                )
            if not any(e.kind == kind and e.id == id for e in entries):
                self.entry(kind, id)  # raises 404
            out = [e for e in entries if not (e.kind == kind and e.id == id)]
            if kind == "user":
                out = self._without_member(out, id, extra)
            return out

        await self._change(principal, f"{kind}.delete", kind, id, change, remote, [], extra)
        return {"removed": id, "kind": kind, **extra}

    # ---- the one path every change takes

    async def _change(
        self,
        principal: Principal,
        action: str,
        kind: str,
        id: str,
        change: Callable[[list[Entry]], list[Entry]],
        remote: str | None,
        fields: list[str],
        extra: dict[str, Any] | None = None,
    ) -> None:
        svc = self.svc
        details: dict[str, Any] = {"fields": fields} if fields else {}
        try:
            principal.require("provision", "change users, groups, rooms or roles")
        except Forbidden:
            svc.audit(principal, action, id, "denied", details, remote=remote)
            await _durable(svc)
            raise
        async with svc.directory_lock:
            old = svc.config
            try:
                entries = change(entries_of(old))
                new = with_entries(old, entries)
                self._check(principal, kind, id, old, new)
                digest = await self._password_hash(kind, id, old, new)
                self._check_idle(kind, id, old, new)
            except ApiError as exc:
                outcome = "denied" if isinstance(exc, Forbidden) else "failed"
                svc.audit(
                    principal, action, id, outcome, {**details, "error": exc.id}, remote=remote
                )
                await _durable(svc)
                raise
            try:
                svc.apply_directory(new)  # live first: nothing awaited since the idle check
            except ValueError as exc:  # the core found the user held after all (a claim)
                svc.audit(
                    principal,
                    action,
                    id,
                    "failed",
                    {**details, "error": "user-busy"},
                    remote=remote,
                )
                await _durable(svc)
                raise Conflict(
                    f"{exc}: try again later", id="user-busy", details={"user": id}
                ) from None
            if extra:
                details.update(extra)
            writes = _writes(old, new)
            at, by = svc.wallclock(), principal.user_id

            async def job(conn: AsyncConnection) -> None:
                for k, i, model in writes:
                    await write_entry(conn, k, i, model, at=at, by=by)
                await _sync_users_table(conn, old, new, digest, at)

            fut = svc.journal.submit(job, action)
            svc.audit(principal, action, id, "ok", details, remote=remote)
            try:
                async with asyncio.timeout(svc.journal.ack_timeout):
                    await asyncio.shield(fut)
            except TimeoutError:
                raise StoreUnavailable(
                    f"the store has not committed in {svc.journal.ack_timeout:g} s; the change "
                    "is live and its write queued"
                ) from None
            except Exception:
                # The store refused it: undo live what was never written.
                with contextlib.suppress(ValueError):
                    svc.apply_directory(old)
                raise
            await svc.journal.sync()  # the audit entry, queued after the write
            # A removed user's sessions and tokens end, and with them its open event streams
            # (which would otherwise go on showing it the centre's events).
            for uid in {u.id for u in old.users} - {u.id for u in new.users}:
                await svc.auth.revoke_user(uid)

    def _check(self, principal: Principal, kind: str, id: str, old: Config, new: Config) -> None:
        if not new.users:
            raise Conflict("the last user cannot be removed", id="last-user")
        if kind == "user" and id == principal.user_id and new.user(id) is None:
            raise Conflict(
                "you cannot remove your own user (another provisioner can)",
                id="cannot-remove-self",
                details={"user": id},
            )
        roles = new.all_roles
        if kind == "role" and id not in roles:
            users = [u.id for u in new.users if u.role == id]
            if users:
                raise Conflict(
                    f"role {id!r} is given to {', '.join(users)}: give them another role first",
                    id="role-in-use",
                    details={"role": id, "users": users},
                )
        d = new.dispatch
        if kind == "user" and new.user(id) is None and id == d.overflow_to:
            raise Conflict(
                f"{id} takes the dispatcher queue's overflow (dispatch.overflow_to in the "
                "config): change the config first",
                id="user-in-use",
                details={"user": id, "used_as": "dispatch.overflow_to"},
            )
        if (d.number is not None or d.emergency_number is not None) and not new.positions:
            raise Conflict(
                "this would leave no dispatcher position, and the dispatcher number needs one",
                id="last-position",
            )
        self._check_numbers(new)
        self._check_grants(principal, kind, id, old, new)
        problems = [p for p in cross_check(new) if p not in cross_check(old)]
        named = {f.permission or "start" for f in self.svc.library.values()}
        known = set(unknown_permissions(old.roles, named))
        problems += [p for p in unknown_permissions(new.roles, named) if p not in known]
        problems += check_switch_users(self.svc.switch, new)
        if problems:
            raise Unprocessable(
                "; ".join(problems),
                id="invalid-directory",
                details={"problems": problems},
            )

    @staticmethod
    def _check_numbers(new: Config) -> None:
        owners: dict[str, str] = {}
        d = new.dispatch
        claims: list[tuple[str, str]] = []
        if d.number is not None:
            claims.append((d.number, "the dispatcher queue"))
        if d.emergency_number is not None:
            claims.append((d.emergency_number, "the emergency number"))
        claims += [(n, f"user {u.id!r}") for u in new.users for n in u.numbers]
        claims += [(g.number, f"group {g.id!r}") for g in new.groups if g.number is not None]
        claims += [(m.number, f"room {m.id!r}") for m in new.meetings]
        for number, owner in claims:
            if number in owners and owners[number] != owner:
                raise Conflict(
                    f"number {number!r} is already {owners[number]}'s",
                    id="number-in-use",
                    details={"number": number, "used_by": owners[number]},
                )
            owners.setdefault(number, owner)

    @staticmethod
    def _check_grants(principal: Principal, kind: str, id: str, old: Config, new: Config) -> None:
        """A provisioner grants no more than it holds (see the module docstring)."""
        if "*" in principal.permissions:
            return
        roles = new.all_roles
        granted: list[str] = []
        if kind == "role" and id in roles:
            granted.append(id)
        if kind == "user":
            user = new.user(id)
            if user is not None and user.role in roles:
                granted.append(user.role)
        for name in granted:
            role = roles[name]
            extra = [p for p in role.permissions if not principal.may(p) or p == "*"]
            if extra or role.max_priority > principal.max_priority:
                raise Forbidden(
                    f"role {name!r} holds more than you may grant "
                    f"({', '.join(extra) or priority_name(role.max_priority)})",
                    id="privilege-escalation",
                    details={"role": name, "permissions": extra},
                )

    def _check_idle(self, kind: str, id: str, old: Config, new: Config) -> None:
        """A user being removed must be idle (no call, no owner); a room, not in use."""
        m = self.svc.manager
        if kind == "room" and not any(r.id == id for r in new.meetings):
            with contextlib.suppress(UnknownMeeting):
                m.meeting(id)
                raise Conflict(
                    f"room {id!r} is in use (a meeting is open in it): end it first "
                    f"(DELETE /api/meetings/{id})",
                    id="room-in-use",
                    details={"room": id},
                )
        gone = {u.id for u in old.users} - {u.id for u in new.users}
        for uid in gone:
            user = m.user(uid)
            rec = m.rec(user)
            if rec.live_leg is not None or rec.owner is not None:
                owner = rec.owner.name if rec.owner is not None else None
                state = m.state_of(user)
                raise Conflict(
                    f"{uid} is in a call ({state}"
                    + (f", held by {owner}" if owner else "")
                    + f"): end it first (POST /api/users/{uid}/hangup) or try again later",
                    id="user-busy",
                    details={"user": uid, "state": state, **({"owner": owner} if owner else {})},
                )

    async def _password_hash(self, kind: str, id: str, old: Config, new: Config) -> str | None:
        """The argon2id hash of the user's new password, if it has one (hashed off the loop)."""
        if kind != "user":
            return None
        user, was = new.user(id), old.user(id)
        if user is None or (was is not None and was.password == user.password):
            return None
        return await asyncio.to_thread(self.svc.auth.hasher.hash, user.password)

    @staticmethod
    def _without_member(entries: list[Entry], user_id: str, extra: dict[str, Any]) -> list[Entry]:
        """Take a removed user out of its groups (the groups are named in the answer)."""
        out: list[Entry] = []
        left: list[str] = []
        for e in entries:
            if isinstance(e.model, GroupConfig) and user_id in e.model.members:
                members = tuple(m for m in e.model.members if m != user_id)
                data = {**entry_data(e.model), "members": list(members)}
                e = Entry(e.kind, e.id, GroupConfig.model_validate(data))
                left.append(e.id)
            out.append(e)
        if left:
            extra["groups"] = left
        return out


_MODELS: dict[str, type[BaseModel]] = {
    "user": UserConfig,
    "group": GroupConfig,
    "room": MeetingConfig,
    "role": RoleConfig,
}


def role_from(data: dict[str, Any]) -> RoleConfig:
    """A role's table from an API body (422 naming the key if it is bad)."""
    role = _patched("role", "", None, data)
    assert isinstance(role, RoleConfig)
    return role


def _patched(kind: str, id: str, model: BaseModel | None, patch: dict[str, Any]) -> BaseModel:
    """``model`` with the keys of ``patch`` changed (``None`` unsets), validated as its table."""
    data = {} if model is None else entry_data(model)
    if kind == "user" and "number" in patch:
        data.pop("numbers", None)
    if kind == "user" and "numbers" in patch:
        data.pop("number", None)
    for key, value in patch.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    try:
        return _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = format_loc(tuple(e["loc"])) if e["loc"] else "body"
        msg = str(e["msg"]).removeprefix("Value error, ")
        raise Unprocessable(
            f"{field}: {msg}", id="invalid-request", details={"field": field}
        ) from None


async def _durable(svc: Service) -> None:
    """Let a refusal's audit entry land before answering (a store that is down does not turn
    the refusal into a 503: the entry stays queued)."""
    with contextlib.suppress(StoreUnavailable):
        await svc.journal.sync()


def _writes(old: Config, new: Config) -> list[tuple[str, str, BaseModel | None]]:
    """The directory rows that differ between ``old`` and ``new`` (``None``: removed)."""
    before = {(e.kind, e.id): e.model for e in entries_of(old)}
    after = {(e.kind, e.id): e.model for e in entries_of(new)}
    out: list[tuple[str, str, BaseModel | None]] = []
    for key, model in after.items():
        if key not in before or entry_data(before[key]) != entry_data(model):
            out.append((key[0], key[1], model))
    out += [(k[0], k[1], None) for k in before if k not in after]
    return out


async def _sync_users_table(
    conn: AsyncConnection, old: Config, new: Config, digest: str | None, at: float
) -> None:
    """The users table (logins) follows: new users inserted, changed ones updated, removed ones
    deactivated (their sessions and tokens stop working at once: the directory no longer has
    them)."""
    before = {u.id: u for u in old.users}
    after = {u.id: u for u in new.users}
    for uid, user in after.items():
        was = before.get(uid)
        if was == user:
            continue
        values: dict[str, Any] = {
            "name": user.display_name,
            "role": user.role,
            "active": True,
            "updated_at": at,
        }
        if digest is not None and (was is None or was.password != user.password):
            values["password_hash"] = digest
            values["password_check"] = password_check(digest, user.password)
        done = await conn.execute(
            sa.update(users_table).where(users_table.c.id == uid).values(**values)
        )
        if not done.rowcount and "password_hash" in values:
            await conn.execute(sa.insert(users_table).values(id=uid, **values))
    for uid in before.keys() - after.keys():
        await conn.execute(
            sa.update(users_table)
            .where(users_table.c.id == uid)
            .values(active=False, updated_at=at)
        )
