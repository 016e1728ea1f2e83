"""Tenant leases and the tenant → shard directory, in etcd (docs/cluster.md).

One key per tenant, ``{prefix}/tenants/{tenant}``, holds the directory entry of the shard that
serves it (JSON: shard name, SIP addresses, API address, epoch) and is attached to an etcd lease
with a TTL: it exists exactly while its holder keeps renewing. Taking a tenant is one
transaction — *create the key if it does not exist* — so at most one shard holds it; the key's
creation revision, which etcd only ever raises, is the **epoch** of that holding.

The client is ``aetcd`` (asyncio, gRPC, kept up to date), through :class:`Directory` only.

Fencing on this side: a holder counts its lease as valid until ``ttl`` after it *sent* the last
refresh that succeeded — never later than etcd itself expires it, whatever the network did to
the answer. :meth:`Holding.valid` turns false at that instant, and :meth:`Holding.lost` fires;
the shard stops serving the tenant then, before any standby can have taken it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any

import aetcd

__all__ = ["Directory", "Holding"]

log = logging.getLogger("baton.cluster.lease")


class Holding:
    """This process's hold on one tenant's lease (epoch :attr:`epoch`)."""

    def __init__(self, directory: Directory, tenant: str, lease: Any, epoch: int, sent: float):
        self.directory = directory
        self.tenant = tenant
        self.lease = lease
        self.epoch = epoch
        self.deadline = sent + directory.ttl  # monotonic: valid until then unless renewed
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def valid(self) -> bool:
        return not self._lost.is_set() and time.monotonic() < self.deadline

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._keepalive(), name=f"lease-{self.tenant}"
        )

    async def lost(self) -> None:
        """Return when the lease is lost (or released)."""
        await self._lost.wait()

    def _lose(self, why: str) -> None:
        if not self._lost.is_set():
            log.error("tenant %s: lease of epoch %d lost (%s)", self.tenant, self.epoch, why)
            self._lost.set()

    async def _keepalive(self) -> None:
        ttl = self.directory.ttl
        try:
            while True:
                # Renew three times per TTL; stop the instant the deadline passes unrenewed.
                await asyncio.sleep(max(0.0, min(ttl / 3, self.deadline - time.monotonic())))
                if time.monotonic() >= self.deadline:
                    self._lose("not renewed within the TTL")
                    return
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(max(0.05, self.deadline - sent)):
                        left = await self.directory.refresh(self.lease)
                except Exception as exc:  # unreachable, timed out: retry until the deadline
                    log.warning("tenant %s: lease renewal failed: %r", self.tenant, exc)
                    continue
                if left <= 0:
                    self._lose("etcd expired it")
                    return
                self.deadline = sent + ttl
        finally:
            if not self._lost.is_set():
                self._lose("released")

    async def release(self) -> None:
        """Give the tenant up: stop renewing and revoke the lease (its key goes with it)."""
        self._lose("released")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.directory.revoke(self.lease)


class Directory:
    """The tenant → shard directory and the tenants' leases, in etcd."""

    def __init__(self, endpoints: tuple[str, ...], *, prefix: str = "/baton", ttl: float = 3.0):
        self.endpoints = endpoints
        self.prefix = prefix.rstrip("/")
        self.ttl = ttl
        self._client: aetcd.Client | None = None
        self._stale: list[tuple[float, aetcd.Client]] = []
        self._next = 0

    def key(self, tenant: str) -> bytes:
        return f"{self.prefix}/tenants/{tenant}".encode()

    async def _connect(self) -> aetcd.Client:
        if self._client is not None:
            return self._client
        # Connections dropped a while ago have no call left on them (each is bounded): close.
        old = [c for at, c in self._stale if time.monotonic() - at > 2 * self.ttl]
        self._stale = [(at, c) for at, c in self._stale if time.monotonic() - at <= 2 * self.ttl]
        for c in old:
            with contextlib.suppress(Exception):
                await c.close()
        endpoint = self.endpoints[self._next % len(self.endpoints)]
        self._next += 1
        host, _, port = endpoint.removeprefix("http://").rpartition(":")
        client = aetcd.Client(host=host, port=int(port), timeout=max(1, int(self.ttl / 2)))
        await client.connect()
        self._client = client
        return client

    async def _call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        client = await self._connect()
        try:
            return await getattr(client, fn)(*args, **kwargs)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled
            # gRPC cancels the calls of a channel that closes under them: that is a failed
            # call here, never a reason to stop the caller.
            self._drop(client)
            raise ConnectionError(f"etcd {fn}: the call was cancelled by its channel") from None
        except Exception:
            self._drop(client)
            raise

    def _drop(self, client: aetcd.Client) -> None:
        """Use another connection (the next endpoint) from now on; the old one is closed when
        the directory is, not now: other calls may still be using it."""
        if self._client is client:
            self._client = None
            self._stale.append((time.monotonic(), client))

    async def close(self) -> None:
        clients = [c for _, c in self._stale]
        clients += [self._client] if self._client is not None else []
        self._client, self._stale = None, []
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()

    async def holder(self, tenant: str) -> dict[str, Any] | None:
        """The directory entry of the tenant's holder, or ``None`` (the lease is free)."""
        got = await self._call("get", self.key(tenant))
        if got is None:
            return None
        entry: dict[str, Any] = json.loads(got.value)
        entry["epoch"] = int(got.create_revision)
        return entry

    async def entries(self) -> dict[str, dict[str, Any]]:
        """Every tenant's directory entry."""
        out: dict[str, dict[str, Any]] = {}
        head = f"{self.prefix}/tenants/".encode()
        for kv in await self._call("get_prefix", head):
            entry = json.loads(kv.value)
            entry["epoch"] = int(kv.create_revision)
            out[kv.key[len(head) :].decode()] = entry
        return out

    async def campaign(self, tenant: str, entry: dict[str, Any]) -> Holding | None:
        """Take the tenant if its lease is free; ``None`` if another holds it."""
        key = self.key(tenant)
        client = await self._connect()
        sent = time.monotonic()
        lease = await self._call("lease", max(1, math.ceil(self.ttl)))
        try:
            ok, _ = await self._call(
                "transaction",
                compare=[client.transactions.version(key) == 0],
                success=[client.transactions.put(key, json.dumps(entry).encode(), lease=lease)],
                failure=[],
            )
            got = await self._call("get", key) if ok else None
        except BaseException:
            with contextlib.suppress(Exception):
                await self.revoke(lease)
            raise
        if not ok or got is None or int(got.lease) != int(lease.id):
            with contextlib.suppress(Exception):
                await self.revoke(lease)
            return None
        holding = Holding(self, tenant, lease, int(got.create_revision), sent)
        holding.start()
        return holding

    def member_key(self, tenant: str, shard: str) -> bytes:
        return f"{self.prefix}/members/{tenant}/{shard}".encode()

    async def members(self) -> dict[str, dict[str, dict[str, Any]]]:
        """tenant → shard → the member entry of every live shard that may serve it."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        head = f"{self.prefix}/members/".encode()
        for kv in await self._call("get_prefix", head):
            tenant, _, shard = kv.key[len(head) :].decode().partition("/")
            out.setdefault(tenant, {})[shard] = json.loads(kv.value)
        return out

    async def join(self, shard: str, entries: dict[str, dict[str, Any]]) -> Any:
        """Announce this shard as a member of each tenant of ``entries`` (tenant → entry), under
        one lease of its own; returns the lease (renew it with :meth:`refresh`)."""
        lease = await self._call("lease", max(1, math.ceil(self.ttl)))
        for tenant, entry in entries.items():
            await self._call(
                "put", self.member_key(tenant, shard), json.dumps(entry).encode(), lease
            )
        return lease

    async def update(self, holding: Holding, entry: dict[str, Any]) -> bool:
        """Replace the tenant's directory entry, if ``holding`` still holds it (same epoch)."""
        key = self.key(holding.tenant)
        client = await self._connect()
        ok, _ = await self._call(
            "transaction",
            compare=[client.transactions.create(key) == holding.epoch],
            success=[client.transactions.put(key, json.dumps(entry).encode(), lease=holding.lease)],
            failure=[],
        )
        return bool(ok)

    async def refresh(self, lease: Any) -> int:
        """Renew ``lease``; its TTL left (0 or less: it is gone)."""
        resp = await self._call("refresh_lease", lease.id)
        return int(resp.TTL)

    async def revoke(self, lease: Any) -> None:
        await self._call("revoke_lease", lease.id)
