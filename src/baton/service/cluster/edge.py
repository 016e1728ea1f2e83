"""The edge sync: keeps Kamailio's routing current from the cluster's directory in etcd.

Kamailio (``deploy/kamailio/kamailio.cfg``) routes each request by two files this sync writes:

* ``dispatcher.list`` — one dispatcher set per tenant: the shard holding the tenant's lease
  first (priority 10), then the tenant's other live members (standbys, priority 1), so that
  Kamailio fails over to a standby on a timeout or a 503 even before the directory changes;
* ``tenants`` (a db_text table for the ``htable`` module) — every user id and number of a
  tenant → the tenant's set.

It polls the directory every ``interval`` seconds; when what it would write changed, it
rewrites both files (write, then rename) and reloads them in Kamailio over its control socket
(``kamcmd dispatcher.reload``, ``htable.reload tenants``). A reload that fails (Kamailio down or
restarting) is tried again on the next round; a Kamailio that restarts reads the files anyway.

Run it beside Kamailio::

    python -m baton.service.cluster.edge --etcd 127.0.0.1:2379 --dir /var/lib/baton-edge \\
        --ctl unix:/run/baton-edge/kamailio_ctl
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from baton.service.cluster.lease import Directory

__all__ = ["EdgeSync", "main", "render", "sip_uri"]

log = logging.getLogger("baton.cluster.edge")


def sip_uri(listen: str) -> str:
    """``udp:127.0.0.1:5101`` → ``sip:127.0.0.1:5101`` (a transport other than UDP is kept)."""
    transport, _, address = listen.partition(":")
    if not address:
        return f"sip:{listen}"
    if transport.lower() == "udp":
        return f"sip:{address}"
    if transport.lower() == "tls":
        return f"sips:{address}"
    return f"sip:{address};transport={transport.lower()}"


def render(
    holders: dict[str, dict[str, Any]], members: dict[str, dict[str, dict[str, Any]]]
) -> tuple[str, str, dict[str, int]]:
    """The dispatcher list, the tenants table and the set of each tenant."""
    tenants = sorted(set(holders) | set(members))
    sets = {t: i + 1 for i, t in enumerate(tenants)}
    ds = ["# written by the Baton edge sync: setid destination flags priority attrs"]
    table = ["key_name(str) key_type(int) value_type(int) key_value(str) expires(int)"]
    for tenant in tenants:
        holder = holders.get(tenant)
        seen: set[str] = set()
        names: list[str] = []
        if holder is not None:
            for listen in holder.get("sip", [])[:1]:
                uri = sip_uri(listen)
                seen.add(uri)
                ds.append(f"{sets[tenant]} {uri} 0 10 shard={holder.get('shard')}")
            names += holder.get("names", [])
        for shard, entry in sorted(members.get(tenant, {}).items()):
            for listen in entry.get("sip", [])[:1]:
                uri = sip_uri(listen)
                if uri not in seen:
                    seen.add(uri)
                    ds.append(f"{sets[tenant]} {uri} 0 1 shard={shard}")
            if holder is None:
                names += entry.get("names", [])
        for name in dict.fromkeys(names):
            if name and ":" not in name:
                table.append(f"{name}:0:1:{sets[tenant]}:0")
    return "\n".join(ds) + "\n", "\n".join(table) + "\n", sets


class EdgeSync:
    def __init__(
        self,
        directory: Directory,
        folder: Path,
        *,
        ctl: str | None,
        kamcmd: str = "kamcmd",
        interval: float = 0.2,
    ) -> None:
        self.directory = directory
        self.folder = folder
        self.ctl = ctl
        self.kamcmd = kamcmd
        self.interval = interval
        self.written: tuple[str, str] | None = None
        self.reloaded = False
        self.rounds = 0

    async def once(self) -> bool:
        """One round; whether Kamailio now has the directory's routing."""
        holders = await self.directory.entries()
        members = await self.directory.members()
        ds, table, _ = render(holders, members)
        if (ds, table) != self.written:
            _write(self.folder / "dispatcher.list", ds)
            _write(self.folder / "tenants", table)
            self.written = (ds, table)
            self.reloaded = False
            log.warning("edge: routing changed: %s", ds.strip().replace("\n", " | "))
        if not self.reloaded and self.ctl is not None:
            self.reloaded = await self._reload()
        self.rounds += 1
        return self.reloaded

    async def _reload(self) -> bool:
        for command in (("htable.reload", "tenants"), ("dispatcher.reload",)):
            proc = await asyncio.create_subprocess_exec(
                self.kamcmd,
                "-s",
                str(self.ctl),
                *command,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate()
            # kamcmd may exit 0 on an RPC error ("error: 500 - ongoing reload"): read it.
            if proc.returncode != 0 or out.decode().lower().startswith("error"):
                log.warning("edge: %s failed: %s", " ".join(command), out.decode().strip())
                return False
        return True

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except Exception as exc:
                log.warning("edge: cannot read the directory: %r", exc)
            await asyncio.sleep(self.interval)


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole, with a modification time in a later second than the version it
    replaces: Kamailio's db_text (the ``tenants`` table) re-reads a file on reload only if its
    ``st_mtime``, in whole seconds, moved on — two writes in one second (the directory settling
    as shards start) left the edge on the first for good, answering 404 to every call."""
    try:
        before = int(path.stat().st_mtime)
    except FileNotFoundError:
        before = 0
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text, encoding="utf-8")
    stamp = max(time.time(), before + 1.0)
    os.utime(tmp, (stamp, stamp))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m baton.service.cluster.edge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--etcd", action="append", default=[], help="HOST:PORT (repeat for each)")
    p.add_argument("--prefix", default="/baton")
    p.add_argument("--ttl", type=float, default=3.0)
    p.add_argument("--dir", type=Path, required=True, help="where Kamailio reads the files")
    p.add_argument("--ctl", help="Kamailio's control socket (kamcmd -s)")
    p.add_argument("--kamcmd", default="kamcmd")
    p.add_argument("--interval", type=float, default=0.2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.dir.mkdir(parents=True, exist_ok=True)
    directory = Directory(tuple(args.etcd or ["127.0.0.1:2379"]), prefix=args.prefix, ttl=args.ttl)
    sync = EdgeSync(directory, args.dir, ctl=args.ctl, kamcmd=args.kamcmd, interval=args.interval)
    try:
        asyncio.run(sync.run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
