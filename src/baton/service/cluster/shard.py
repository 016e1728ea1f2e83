"""``baton serve`` as a shard of a cluster (docs/cluster.md).

A :class:`Shard` runs one :class:`TenantSlot` per tenant its ``[cluster]`` table names. A slot
campaigns for the tenant's lease (an active shard at once, a standby after ``standby_delay``,
then both whenever the lease is free) and, while it holds it, runs the tenant's whole
dispatch centre — a :class:`~baton.service.runtime.Service` with its own core, switch, journal
and API — fenced by the lease's epoch. Tenants never share a core: nothing crosses them but SIP
calls.

When the lease is lost (not renewed within its TTL: etcd unreachable, this process stalled),
the slot stops acting for the tenant **at once**, in this order: the journal refuses every
write (it was already refusing: the fence checks the lease's validity), the switch closes (no
more SIP or RTP for the tenant), then the flows and the rest stop. It then campaigns again like
a standby.

Take-over: the new holder's service opens a run in the tenant's shared database; the dead
holder's open records are closed with reason ``failover``, the calls it left are ended (BYE),
and the registrations it journalled are restored into the new switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Generator, Mapping
from typing import Any

import sqlalchemy as sa
import uvicorn
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

# Imported here, not when a tenant is taken: the SIP switch's first import (its media engine,
# scipy) blocks the loop for seconds, longer than a lease lives.
import baton.switch.sip  # noqa: F401
from baton.core import FlowSpec
from baton.service.app import create_app
from baton.service.auth.service import quick_check_matches
from baton.service.cluster.config import ShardConfig, TenantPlacement
from baton.service.cluster.fence import DbFence
from baton.service.cluster.fence import metadata as cluster_tables
from baton.service.cluster.lease import Directory, Holding
from baton.service.cluster.restore import Restorer
from baton.service.config import Config
from baton.service.runtime import Service, load_library
from baton.service.store import Store
from baton.service.store.journal import Fenced
from baton.service.store.tables import users

__all__ = ["Shard", "TenantSlot"]

log = logging.getLogger("baton.cluster")

#: The advisory lock the shards of a tenant migrate its database under.
MIGRATION_LOCK = 0x6261746F6E  # "baton"

#: Seconds between checks of the stored password hashes while another shard holds the tenant.
RECHECK = 2.0

#: Seconds between looks at the running service's users, for the directory entry.
PUBLISH_EVERY = 1.0

#: Seconds between looks at a tenant's lease while another shard holds it.
POLL = 0.2


class _QuietServer(uvicorn.Server):
    """A tenant's API server: the shard, not each server, handles SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class TenantSlot:
    """One tenant on this shard: campaign, serve while holding the lease, stop when it is
    lost."""

    def __init__(self, shard: Shard, name: str, config: Config, placement: TenantPlacement) -> None:
        self.shard = shard
        self.name = name
        self.config = config
        self.placement = placement
        self.service: Service | None = None
        self.holding: Holding | None = None
        self.takeovers = 0
        self.library: Mapping[str, FlowSpec[Any]] | None = None
        self.known_hashes: dict[str, str] = {}

    def entry(self, config: Config | None = None) -> dict[str, Any]:
        """This shard's directory entry for the tenant (what the edge routes by): where it
        serves the tenant, and the names the edge routes to it — user ids and numbers (of
        ``config``: the running service's, which provisioning changes)."""
        c = config or self.config
        sip = c.sip.get("listen") or ["udp:127.0.0.1:5060"]
        names = [u.id for u in c.users] + [n for u in c.users for n in u.numbers]
        names += [g.number for g in c.groups if g.number] + [m.number for m in c.meetings]
        return {
            "shard": self.shard.name,
            "role": self.placement.role,
            "sip": list(sip),
            "api": c.api.listen,
            "names": names,
            "since": time.time(),
        }

    async def prepare(self) -> None:
        """What can be done without the lease, so a take-over is quick and the loop is never
        blocked while a lease is held: load the flow library, migrate the tenant's database."""
        self.library = load_library(self.config)
        async with self.shard.migrating, _migration_lock(self.config.database):
            store = Store(self.config.database)
            try:
                await store.open()
                async with store.engine.begin() as conn:
                    await conn.run_sync(cluster_tables.create_all)
            finally:
                await store.close()
        await self.check_passwords()

    async def check_passwords(self) -> None:
        """Check the stored password hashes against the config, read-only, before holding the
        lease: the take-over then skips those. The users table's quick check settles most of
        them at no cost (docs/service.md, "Passwords at start"); the rest cost an argon2
        verify each, side by side in threads."""
        store = Store(self.config.database)
        try:
            await store.open()
            async with store.engine.connect() as conn:
                rows = {r.id: r for r in (await conn.execute(sa.select(users))).all()}
        finally:
            await store.close()
        hasher = PasswordHasher()
        known = len(self.known_hashes)
        todo = []
        for user in self.config.users:
            row = rows.get(user.id)
            if row is None or self.known_hashes.get(user.id) == row.password_hash:
                continue
            if quick_check_matches(row, user.password):
                self.known_hashes[user.id] = row.password_hash
            else:
                todo.append((user.id, row.password_hash, user.password))

        def check(digest: str, secret: str) -> bool:
            try:
                return bool(hasher.verify(digest, secret))
            except Exception:
                return False

        verified = await asyncio.gather(*(asyncio.to_thread(check, d, p) for _, d, p in todo))
        for (uid, digest, _), ok in zip(todo, verified, strict=True):
            if ok:
                self.known_hashes[uid] = digest
        if len(self.known_hashes) == known:
            return
        log.info(
            "tenant %s: %d of %d stored passwords checked (%d with argon2)",
            self.name,
            len(self.known_hashes),
            len(self.config.users),
            len(todo),
        )

    async def run(self) -> None:
        directory = self.shard.directory
        # Announced first: preparing blocks the loop at times (migrations), and a standby
        # elsewhere must see this shard as the tenant's active before it campaigns.
        await self.shard.announced.wait()
        while True:
            try:
                await self.prepare()
                break
            except Exception as exc:
                log.error("tenant %s: cannot prepare: %r; retrying", self.name, exc)
                await asyncio.sleep(1.0)
        log.info("tenant %s: ready to serve (%s)", self.name, self.placement.role)
        if self.placement.role == "standby":
            await asyncio.sleep(self.shard.config.cluster.standby_delay)
            await self._let_the_active_start()
        checked = time.monotonic()
        while True:
            try:
                holding = await directory.campaign(self.name, self.entry())
            except Exception as exc:
                log.warning("tenant %s: cannot reach etcd: %r", self.name, exc)
                holding = None
            if holding is None:
                await asyncio.sleep(POLL)
                if time.monotonic() - checked > RECHECK:
                    checked = time.monotonic()
                    with contextlib.suppress(Exception):
                        await self.check_passwords()
                continue
            try:
                await self.serve(holding)
            except Fenced as exc:
                log.error("tenant %s: %s", self.name, exc)
            except Exception:
                log.exception("tenant %s: serving failed", self.name)
            finally:
                await holding.release()
            await asyncio.sleep(POLL)

    async def _let_the_active_start(self) -> None:
        """At start-up, a standby leaves a free tenant to its announced active shard for up to
        ``active_grace`` seconds (the active may still be preparing: migrations, password
        checks); it campaigns at once if no active shard of the tenant is announced."""
        c = self.shard.config.cluster
        end = time.monotonic() + c.active_grace
        while time.monotonic() < end:
            try:
                members = (await self.shard.directory.members()).get(self.name, {})
            except Exception:
                return
            if not any(
                m.get("role") == "active"
                for shard, m in members.items()
                if shard != self.shard.name
            ):
                return
            await asyncio.sleep(POLL)

    async def serve(self, holding: Holding) -> None:
        self.holding = holding
        started = time.monotonic()
        log.warning("tenant %s: lease taken, epoch %d; starting", self.name, holding.epoch)
        fence = DbFence(self.name, self.shard.name, holding.epoch, valid=holding.valid)
        service = Service(
            self.config, library=self.library, fencing=fence, known_hashes=self.known_hashes
        )
        restorer = Restorer(service, fence)
        self.service = service
        server: _QuietServer | None = None
        server_task: asyncio.Task[Any] | None = None
        try:
            await restorer.before_start()
            await service.start()
            await restorer.after_start()
            if self.placement.api is not None:
                server = _QuietServer(
                    uvicorn.Config(
                        create_app(service, manage_lifecycle=False),
                        log_config=None,
                        access_log=False,
                        lifespan="off",
                        ws="websockets-sansio",
                    )
                )
                server_task = asyncio.get_running_loop().create_task(
                    server.serve(sockets=[_listen(self.config.api)]), name=f"api-{self.name}"
                )
            self.takeovers += 1
            log.warning(
                "tenant %s: serving (epoch %d, run %d, started in %.2f s)",
                self.name,
                holding.epoch,
                service.run_id,
                time.monotonic() - started,
            )
            await self._publish(service, holding)
        finally:
            self.service = None
            self.holding = None
            await self._stop(service, restorer, server, server_task, holding)

    async def _publish(self, service: Service, holding: Holding) -> None:
        """Until the lease is lost: keep the directory entry's names current with the running
        service's users (the provisioning API adds and removes them), so the edge routes them."""
        published = self.entry()["names"]
        lost = asyncio.ensure_future(holding.lost())
        try:
            while not lost.done():
                await asyncio.wait([lost], timeout=PUBLISH_EVERY)
                entry = self.entry(service.config)
                if entry["names"] != published and holding.valid():
                    try:
                        if await self.shard.directory.update(holding, entry):
                            published = entry["names"]
                    except Exception as exc:
                        log.warning("tenant %s: directory update: %r", self.name, exc)
        finally:
            lost.cancel()

    async def _stop(
        self,
        service: Service,
        restorer: Restorer,
        server: _QuietServer | None,
        server_task: asyncio.Task[Any] | None,
        holding: Holding,
    ) -> None:
        lost = not holding.valid()
        if lost and service.started:
            # Stop acting now: no write (the fence refuses already), no SIP, then the rest.
            service.journal.refuse(Fenced(f"lease of epoch {holding.epoch} lost"))
        # The switch listens from the moment the service is built: close it first, whether
        # the service got as far as starting or not.
        with contextlib.suppress(Exception):
            await service.switch.close()
        restorer.close()
        if server is not None:
            server.should_exit = True
        if server_task is not None:
            await asyncio.gather(server_task, return_exceptions=True)
        try:
            async with asyncio.timeout(10):
                await service.stop()
        except Exception as exc:
            log.error("tenant %s: stopping: %r", self.name, exc)
        log.warning("tenant %s: stopped serving (epoch %d)", self.name, holding.epoch)


class Shard:
    """A shard: the tenants of its ``[cluster]`` table, each served while its lease is held."""

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self.name = config.cluster.name
        c = config.cluster
        self.directory = Directory(c.etcd, prefix=c.prefix, ttl=c.ttl)
        self.announced = asyncio.Event()
        #: Alembic's state is global to the process: one tenant's database migrates at a time.
        self.migrating = asyncio.Lock()
        self.slots = {
            name: TenantSlot(self, name, config.tenants[name], placement)
            for name, placement in c.tenants.items()
        }

    async def run(self) -> None:
        """Serve until cancelled; then every tenant is stopped and its lease released."""
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(slot.run(), name=f"tenant-{name}") for name, slot in self.slots.items()
        ]
        tasks.append(loop.create_task(self._membership(), name="membership"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.directory.close()

    async def _membership(self) -> None:
        """Keep this shard announced as a member of its tenants (the edge lists standbys as
        fail-over destinations): one lease, renewed like a tenant's, re-made if lost."""
        directory = self.directory
        entries = {name: slot.entry() for name, slot in self.slots.items()}
        lease: Any = None
        while True:
            try:
                if lease is None:
                    lease = await directory.join(self.name, entries)
                elif await directory.refresh(lease) <= 0:
                    lease = None
                    continue
            except Exception as exc:
                log.warning("shard %s: membership: %r", self.name, exc)
                lease = None
            self.announced.set()  # tried once at least: the tenants may start preparing
            await asyncio.sleep(directory.ttl / 3)


@contextlib.asynccontextmanager
async def _migration_lock(url: str) -> AsyncIterator[None]:
    """Across processes: the shards of a tenant share its database and must not migrate it at
    the same time (PostgreSQL: an advisory lock held while one does)."""
    if not url.startswith("postgresql"):
        yield
        return
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                yield
            finally:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
    finally:
        await engine.dispose()


def _listen(api: Any) -> socket.socket:
    family = socket.AF_INET6 if ":" in api.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((api.host, api.port))
    sock.listen(512)
    return sock
