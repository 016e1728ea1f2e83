"""Authentication: passwords, sessions and API tokens, all stored hashed with argon2id.

Tokens
------
A session and an API token are the same thing with a different ``kind``: the string
``baton_<id>_<secret>``. The ``id`` is public and indexes the ``tokens`` table; only an argon2id
hash of the secret is stored, so a stolen database yields no usable token. Verifying argon2 costs
tens of milliseconds by design; a request after the first with the same token is checked against
an in-memory cache keyed by the token's SHA-256 (never stored), dropped on revocation and expiry.

Passwords come from the config (the SIP adapter needs them in clear for digest authentication);
the ``users`` table keeps their argon2id hashes and is refreshed at start — only when a password
changed, so start-up does not re-hash everyone. Beside each hash it keeps a quick check
(:func:`password_check`: sha256 over the hash and the password): a start sees that a password
is unchanged without an argon2 verify, so starting costs no argon2 per user. The quick check
tells a database thief nothing new: the ``directory`` table beside it holds the same passwords
in clear (SIP digest needs them).

Contract: :meth:`Auth.login` returns a principal and a new session token or raises
:class:`~baton.service.errors.Unauthenticated` (the same message for an unknown user and a wrong
password) or :class:`~baton.service.errors.TooManyRequests` after repeated failures;
:meth:`Auth.authenticate` returns the principal for a token or raises ``Unauthenticated``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.ext.asyncio import AsyncConnection

from baton.service.auth.permissions import Principal
from baton.service.config import Config, UserConfig
from baton.service.errors import NotFound, TooManyRequests, Unauthenticated
from baton.service.store import Journal, Store
from baton.service.store.tables import tokens, users

__all__ = ["Auth", "TokenInfo", "password_check", "principal_for", "quick_check_matches"]

TOKEN_PREFIX = "baton_"
#: Failed logins allowed per (account, source) before each further attempt must wait.
FREE_FAILURES = 5
#: Failed logins allowed per source across all accounts (password spraying) before it waits.
SOURCE_FREE_FAILURES = 20
#: The wait after each further failure: it doubles from the first up to the last (seconds).
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0
#: Failures are forgotten this long after the last one (seconds).
FAILURE_MEMORY = 900.0
#: At most this many (account, source) and source entries are remembered (oldest dropped).
MAX_THROTTLE_KEYS = 10_000


@dataclass(slots=True)
class _Failures:
    count: int
    last: float

    def wait(self, free: int, now: float) -> float:
        """Seconds before the next attempt is heard (0: now)."""
        if self.count < free:
            return 0.0
        backoff = min(BACKOFF_FIRST * 2.0 ** min(self.count - free, 30), BACKOFF_MAX)
        return max(0.0, self.last + backoff - now)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    user_id: str
    kind: str
    label: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


def principal_for(
    config: Config,
    user: UserConfig,
    *,
    via: str,
    token_id: str,
    expires_at: float | None = None,
) -> Principal:
    """The principal of a configured user: its role's permissions, the lower of the role's and
    the user's priority caps."""
    role = config.role_of(user)
    cap = (
        role.max_priority
        if user.max_priority is None
        else min(role.max_priority, user.max_priority)
    )
    return Principal(
        user_id=user.id,
        name=user.display_name,
        role=user.role,
        permissions=frozenset(role.permissions),
        max_priority=cap,
        via=via,
        token_id=token_id,
        scope=scope_of(config, user),
        scope_name=role.effective_scope,
        expires_at=expires_at,
    )


def scope_of(config: Config, user: UserConfig) -> frozenset[str] | None:
    """The user ids ``user`` may act for under its role's scope (``None``: everyone)."""
    scope = config.role_of(user).effective_scope
    if scope == "all":
        return None
    if scope == "centre":
        return frozenset(u.id for u in config.users)
    if scope == "groups":
        members = {m for g in config.groups if user.id in g.members for m in g.members}
        return frozenset({user.id, *members})
    return frozenset({user.id})


def _token_info(r: Any) -> TokenInfo:
    """A ``tokens`` row as a :class:`TokenInfo`."""
    return TokenInfo(
        r.id, r.user_id, r.kind, r.label, r.created_at, r.expires_at, r.revoked_at, r.last_used_at
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    rest = token[len(TOKEN_PREFIX) :]
    token_id, sep, secret = rest.partition("_")
    if not sep or not token_id or not secret or len(token) > 200:
        return None
    return token_id, secret


def password_check(digest: str, password: str) -> str:
    """The quick check kept beside an argon2 hash: sha256 over the hash and the password it was
    made from (see the module docstring)."""
    return hashlib.sha256(f"{digest}\0{password}".encode()).hexdigest()


def quick_check_matches(row: Any, password: str) -> bool:
    """Whether a ``users`` row's quick check says its hash was made from ``password``."""
    check = getattr(row, "password_check", None)
    return check is not None and hmac.compare_digest(
        check, password_check(row.password_hash, password)
    )


class Auth:
    """Users' credentials and tokens. Writes go through the journal (one writer, ordered with the
    audit entries); reads go to the store directly."""

    def __init__(
        self,
        config: Config,
        store: Store,
        journal: Journal,
        *,
        hasher: PasswordHasher | None = None,
        wallclock: Callable[[], float] = time.time,
        known_hashes: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.journal = journal
        self.hasher = hasher or PasswordHasher()
        #: user id → a stored hash already checked against the config's password (a standby
        #: shard checks them before it takes a tenant over, so the take-over does not spend
        #: half a second per user verifying them: docs/cluster.md).
        self.known_hashes: Mapping[str, str] = known_hashes or {}
        self.wallclock = wallclock
        self._cache: dict[str, tuple[str, str, float | None]] = {}  # digest → (id, user, expiry)
        # Login failures per (account, source) and per source; oldest first.
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        # A hash verified for unknown users, so they answer as slowly as known ones (no telling
        # which users exist from the time a refusal takes): a configured user's, taken at start
        # — a match is still refused, as there is no such user.
        self._dummy_hash: str | None = None
        # token id → set when it is revoked (held by whoever watches: the event streams)
        self._watches: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    # ---- users

    async def sync_users(self, conn: AsyncConnection) -> None:
        """Bring the ``users`` table in line with the config (run once at start, before the
        journal writer): new users added, changed passwords re-hashed, removed users
        deactivated (their tokens stop working)."""
        now = self.wallclock()
        rows = {r.id: r for r in (await conn.execute(sa.select(users))).all()}

        async def unchanged(user: UserConfig) -> bool:
            row = rows.get(user.id)
            if row is None:
                return False
            if (
                quick_check_matches(row, user.password)
                or self.known_hashes.get(user.id) == row.password_hash
            ):
                return True
            return await self._verify(row.password_hash, user.password)

        # One full argon2 verify (or hash) per configured user: done side by side in threads
        # (argon2 releases the GIL) rather than one after the other, which made a start under
        # load take tens of seconds.
        configured = list(self.config.users)
        same = await asyncio.gather(*(unchanged(u) for u in configured))
        fresh = [u for u, ok in zip(configured, same, strict=True) if not ok]
        hashed = await asyncio.gather(
            *(asyncio.to_thread(self.hasher.hash, u.password) for u in fresh)
        )
        digests = {u.id: d for u, d in zip(fresh, hashed, strict=True)}
        for user, ok in zip(configured, same, strict=True):
            row = rows.pop(user.id, None)
            if row is not None and ok:
                # Unknown users are verified against a real hash made with the same parameters:
                # the same cost, at no extra hashing at start (and it can never let them in).
                self._dummy_hash = self._dummy_hash or row.password_hash
                await conn.execute(
                    sa.update(users)
                    .where(users.c.id == user.id)
                    .values(
                        name=user.display_name,
                        role=user.role,
                        active=True,
                        updated_at=now,
                        password_check=password_check(row.password_hash, user.password),
                    )
                )
                continue
            digest = digests[user.id]
            self._dummy_hash = self._dummy_hash or digest
            values = {
                "name": user.display_name,
                "role": user.role,
                "password_hash": digest,
                "password_check": password_check(digest, user.password),
                "active": True,
                "updated_at": now,
            }
            if row is None:
                await conn.execute(sa.insert(users).values(id=user.id, **values))
            else:
                await conn.execute(sa.update(users).where(users.c.id == user.id).values(**values))
        for gone in rows:
            await conn.execute(
                sa.update(users).where(users.c.id == gone).values(active=False, updated_at=now)
            )

    async def _verify(self, digest: str, secret: str) -> bool:
        def check() -> bool:
            try:
                return bool(self.hasher.verify(digest, secret))
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(check)

    # ---- login

    def _keys(self, user_id: str, remote: str | None) -> list[tuple[str, int]]:
        # Per (account, source), not per account: a stranger's failures must not lock the
        # account out for its owner (docs/service.md, Logins).
        source = remote or "?"
        return [
            (f"account:{user_id}@{source}", FREE_FAILURES),
            (f"source:{source}", SOURCE_FREE_FAILURES),
        ]

    def _throttle(self, keys: list[tuple[str, int]]) -> None:
        now = self.wallclock()
        for key, free in keys:
            f = self._failures.get(key)
            if f is None:
                continue
            if now - f.last > FAILURE_MEMORY:
                del self._failures[key]
                continue
            wait = f.wait(free, now)
            if wait > 0:
                seconds = math.ceil(wait)
                raise TooManyRequests(
                    f"too many failed logins from here; try again in {seconds} s",
                    id="too-many-attempts",
                    details={"retry_after": seconds},
                    headers={"Retry-After": str(seconds)},
                )

    def _failed(self, keys: list[tuple[str, int]]) -> None:
        now = self.wallclock()
        for key, _ in keys:
            f = self._failures.pop(key, None) or _Failures(0, now)
            f.count += 1
            f.last = now
            self._failures[key] = f  # to the end: the newest
        while len(self._failures) > MAX_THROTTLE_KEYS:
            self._failures.popitem(last=False)

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self.hasher.hash, secrets.token_hex(16))
        return self._dummy_hash

    async def login(self, user_id: str, password: str, remote: str | None) -> tuple[Principal, str]:
        """Check a password; on success create a session. Returns (principal, session token).

        An unknown user costs the same password verification as a known one. Failures are
        counted per (account, source) and per source: past :data:`FREE_FAILURES`, each further
        attempt from there waits twice as long as the last (429 ``too-many-attempts`` with
        ``Retry-After``) and is not checked; the owner, from elsewhere, is not affected."""
        keys = self._keys(user_id, remote)
        self._throttle(keys)
        user = self.config.user(user_id)
        row = None
        if user is not None:
            async with self.store.read() as conn:
                row = (
                    await conn.execute(
                        sa.select(users).where(users.c.id == user_id, users.c.active)
                    )
                ).first()
        digest = row.password_hash if row is not None else await self._dummy()
        ok = await self._verify(digest, password) and row is not None
        if not ok or user is None:
            self._failed(keys)
            raise Unauthenticated("wrong user or password", id="bad-credentials")
        self._failures.pop(keys[0][0], None)
        hours = self.config.api.session_hours
        token, info = await self.create_token(user_id, "session", None, hours * 3600)
        principal = principal_for(
            self.config, user, via="session", token_id=info.id, expires_at=info.expires_at
        )
        return principal, token

    # ---- tokens

    async def create_token(
        self, user_id: str, kind: str, label: str | None, lifetime: float | None
    ) -> tuple[str, TokenInfo]:
        """Create a token; returns the token string (shown once) and its record."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        token = f"{TOKEN_PREFIX}{token_id}_{secret}"
        digest = await asyncio.to_thread(self.hasher.hash, secret)
        now = self.wallclock()
        expires = None if lifetime is None else now + lifetime
        await self.journal.commit(
            sa.insert(tokens).values(
                id=token_id,
                user_id=user_id,
                kind=kind,
                label=label,
                secret_hash=digest,
                created_at=now,
                expires_at=expires,
            ),
            "token",
        )
        self._cache[_digest(token)] = (token_id, user_id, expires)
        info = TokenInfo(token_id, user_id, kind, label, now, expires, None, None)
        return token, info

    async def authenticate(self, token: str, *, via: str) -> Principal:
        """The principal for ``token``; raises :class:`Unauthenticated`."""
        now = self.wallclock()
        key = _digest(token)
        cached = self._cache.get(key)
        if cached is not None:
            token_id, user_id, expires = cached
            if expires is not None and expires <= now:
                self._cache.pop(key, None)
                raise Unauthenticated("the session or token has expired", id="token-expired")
        else:
            parts = _split(token)
            if parts is None:
                raise Unauthenticated("malformed token", id="bad-token")
            token_id, secret = parts
            async with self.store.read() as conn:
                row = (await conn.execute(sa.select(tokens).where(tokens.c.id == token_id))).first()
            if row is None or row.revoked_at is not None:
                raise Unauthenticated("unknown or revoked token", id="bad-token")
            if row.expires_at is not None and row.expires_at <= now:
                raise Unauthenticated("the session or token has expired", id="token-expired")
            if not await self._verify(row.secret_hash, secret):
                raise Unauthenticated("unknown or revoked token", id="bad-token")
            user_id, expires = row.user_id, row.expires_at
            self._cache[key] = (token_id, user_id, expires)
        user = self.config.user(user_id)
        if user is None:
            raise Unauthenticated(f"user {user_id!r} no longer exists", id="bad-token")
        return principal_for(self.config, user, via=via, token_id=token_id, expires_at=expires)

    async def list_tokens(self, user_id: str | None) -> list[TokenInfo]:
        q = sa.select(tokens).order_by(tokens.c.created_at)
        if user_id is not None:
            q = q.where(tokens.c.user_id == user_id)
        async with self.store.read() as conn:
            rows = (await conn.execute(q)).all()
        return [_token_info(r) for r in rows]

    async def token(self, token_id: str) -> TokenInfo:
        for info in await self._tokens_by_id(token_id):
            return info
        raise NotFound(f"no token {token_id!r}", id="unknown-token", details={"token": token_id})

    async def _tokens_by_id(self, token_id: str) -> list[TokenInfo]:
        async with self.store.read() as conn:
            rows = (await conn.execute(sa.select(tokens).where(tokens.c.id == token_id))).all()
        return [_token_info(r) for r in rows]

    def watch(self, token_id: str) -> asyncio.Event:
        """An event set when ``token_id`` is revoked (what a long-lived connection made with it
        waits on, to end when its credentials do). Keep a reference while watching."""
        event = self._watches.get(token_id)
        if event is None:
            event = self._watches[token_id] = asyncio.Event()
        return event

    async def revoke(self, token_id: str) -> None:
        """Revoke a token or end a session (idempotent); it stops working at once — also for
        the event streams opened with it."""
        for key, (tid, _, _) in list(self._cache.items()):
            if tid == token_id:
                del self._cache[key]
        event = self._watches.get(token_id)
        if event is not None:
            event.set()
        await self.journal.commit(
            sa.update(tokens)
            .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=self.wallclock()),
            "revoke",
        )

    async def revoke_user(self, user_id: str) -> int:
        """End every session and token of ``user_id`` (a user removed from the directory): they
        stop working, they are listed as revoked, and the event streams opened with them close
        (``token-revoked``). Returns how many were live."""
        live = [t for t in await self.list_tokens(user_id) if t.revoked_at is None]
        for t in live:
            await self.revoke(t.id)
        return len(live)

    def info(self) -> dict[str, Any]:
        return {"cached_tokens": len(self._cache)}
