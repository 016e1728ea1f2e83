"""A whole cluster on one machine, on loopback: etcd, PostgreSQL, Kamailio with the edge sync,
and N shards (docs/cluster.md, "On one machine"). ``deploy/local/run.sh`` runs it; the cluster
tests use the same pieces.

::

    python -m baton.service.cluster.local --dir var/cluster --shards 2

writes two tenants (``acme``, ``bravo``), two shards (each active for one tenant and standby
for the other), starts everything and prints where phones register; Ctrl-C stops every process
it started, by its pid.

Every process listens on 127.0.0.1 only, keeps its data under ``--dir`` and is stopped by the
pid this module started.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MARKER",
    "LocalCluster",
    "Proc",
    "banner",
    "free_port",
    "main",
    "prepare_dir",
    "tenant_toml",
]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
KAMAILIO_CFG = Path(__file__).resolve().parents[4] / "deploy" / "kamailio" / "kamailio.cfg"


#: The file that marks a folder as this runner's own, so a later start may wipe it.
MARKER = ".baton-local-cluster"


class NotOurs(Exception):
    """``--dir`` names a folder that holds files this runner did not put there."""


def prepare_dir(root: Path) -> None:
    """Make ``root`` an empty folder for a new run: wipe it if an earlier run made it (it holds
    the marker), use it if it is empty, and refuse anything else — ``--dir .`` in a checkout or
    a home folder must never be deleted."""
    if root.exists():
        # a run from before the marker left its shard and tenant files: that folder is ours too
        earlier = (root / "shard-0.toml").is_file() and (root / "acme.toml").is_file()
        if (root / MARKER).is_file() or earlier:
            shutil.rmtree(root)
        elif not root.is_dir() or any(root.iterdir()):
            raise NotOurs(
                f"{root} is not a folder this runner made (no {MARKER} in it) and is not empty;"
                " give --dir a new or empty folder (default var/cluster)"
            )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(
        "made by python -m baton.service.cluster.local; wiped at each start\n"
    )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on loopback."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@dataclass
class Proc:
    """A process this module started; stopped by its own pid, never by name."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM
    #: how it was started, so :meth:`LocalCluster.respawn` starts it the same way
    preexec: Callable[[], None] | None = None
    env: dict[str, str] | None = None
    cwd: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()
        self.reap_group()

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            self.reap_group()
            return
        self.popen.send_signal(self.stop_signal)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
        self.reap_group()

    def reap_group(self) -> None:
        """Once the process has exited, end what it left behind in its own process group:
        Kamailio's workers outlive a ``kill -9`` of its main process and keep its port."""
        if self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def _wait(check: Callable[[], bool], what: str, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not proc.alive():
            raise RuntimeError(f"{what} exited:\n{proc.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start in {timeout} s:\n{proc.output()[-3000:]}")
        time.sleep(0.1)


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class LocalCluster:
    """The pieces of a loopback cluster, each started on demand; :meth:`stop` stops all."""

    root: Path
    python: str = sys.executable
    procs: list[Proc] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)  # folders outside root, removed by stop
    etcd_port: int = 0
    pg_port: int = 0
    sip_port: int = 0
    etcd_endpoints: list[str] = field(default_factory=list)
    #: the key the edge signs calls between tenants with (each tenant's [sip.peers] secret)
    peer_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    _reported: set[int] = field(default_factory=set)  # pids of exits already reported

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        stop_signal: int = signal.SIGTERM,
        preexec: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        proc = self._start(name, argv, stop_signal=stop_signal, preexec=preexec, env=env, cwd=cwd)
        self.procs.append(proc)
        return proc

    def _start(
        self,
        name: str,
        argv: list[str],
        *,
        stop_signal: int = signal.SIGTERM,
        preexec: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        log = self.root / f"{name}.log"
        out = log.open("ab")
        popen = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: see Proc.reap_group
        )
        out.close()
        return Proc(name, popen, log, stop_signal, preexec, env, cwd)

    # ---- etcd

    def start_etcd(self, port: int | None = None) -> Proc:
        self.etcd_port = port or free_port()
        peer = free_port()
        data = self.root / "etcd"
        proc = self._spawn(
            "etcd",
            [
                "etcd",
                "--name",
                "local",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"local=http://127.0.0.1:{peer}",
            ],
        )
        _wait(lambda: _tcp_open(self.etcd_port), "etcd", proc)
        return proc

    def start_etcd_cluster(self, members: int = 3) -> list[Proc]:
        """An etcd cluster of ``members`` members on loopback (the first one's client port is
        :attr:`etcd_port`); :attr:`etcd_endpoints` lists every member's client address."""
        names = [f"etcd{i}" for i in range(members)]
        clients = [free_port() for _ in names]
        peers = [free_port() for _ in names]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peers, strict=True))
        procs = []
        for name, client, peer in zip(names, clients, peers, strict=True):
            procs.append(
                self._spawn(
                    name,
                    [
                        "etcd",
                        "--name",
                        name,
                        "--data-dir",
                        str(self.root / name),
                        "--listen-client-urls",
                        f"http://127.0.0.1:{client}",
                        "--advertise-client-urls",
                        f"http://127.0.0.1:{client}",
                        "--listen-peer-urls",
                        f"http://127.0.0.1:{peer}",
                        "--initial-advertise-peer-urls",
                        f"http://127.0.0.1:{peer}",
                        "--initial-cluster",
                        initial,
                        "--initial-cluster-token",
                        self.root.name,
                    ],
                )
            )
        for proc, client in zip(procs, clients, strict=True):
            _wait(functools.partial(_tcp_open, client), proc.name, proc)
        self.etcd_port = clients[0]
        self.etcd_endpoints = [f"127.0.0.1:{c}" for c in clients]
        return procs

    def respawn(self, proc: Proc) -> Proc:
        """Start a stopped process again the way it was started (command line, user,
        environment, folder; its log goes on). The new process takes the old one's place in
        :attr:`procs`."""
        if proc.alive():
            raise RuntimeError(f"{proc.name} is still running")
        args = proc.popen.args
        argv = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
        new = self._start(
            proc.name,
            argv,
            stop_signal=proc.stop_signal,
            preexec=proc.preexec,
            env=proc.env,
            cwd=proc.cwd,
        )
        if proc in self.procs:
            self.procs[self.procs.index(proc)] = new
        else:
            self.procs.append(new)
        self._reported.discard(proc.pid)
        return new

    def exited(self) -> list[Proc]:
        """The processes that exited since the last call, each reported once: the local
        cluster goes on without them (a killed shard is a fail-over to watch, not the end)."""
        gone = [p for p in self.procs if not p.alive() and p.pid not in self._reported]
        self._reported.update(p.pid for p in gone)
        for proc in gone:
            proc.reap_group()
        return gone

    def respawn_exited(self) -> list[Proc]:
        """Start again every process that has exited (``kill -USR1`` of the runner)."""
        return [self.respawn(p) for p in list(self.procs) if not p.alive()]

    @property
    def etcd(self) -> str:
        return f"127.0.0.1:{self.etcd_port}"

    # ---- PostgreSQL

    def start_postgres(self, port: int | None = None) -> Proc:
        """A throw-away PostgreSQL 15 (as the ``postgres`` user when run as root)."""
        self.pg_port = port or free_port()
        # Its own folder under the system's temporary one: the postgres user must reach it,
        # and a test's folder is usually private to root.
        data = Path(tempfile.mkdtemp(prefix="baton-pg-"))
        self.scratch.append(data)
        preexec: Callable[[], None] | None = None
        env = dict(os.environ)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            shutil.chown(data, "postgres", "postgres")

            def preexec() -> None:  # the server refuses to run as root
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

            env["HOME"] = pw.pw_dir
        subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data / "db"),
                "-A",
                "trust",
                "-U",
                "baton",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            preexec_fn=preexec,
            env=env,
            cwd=data,
        )
        argv = [str(PG_BIN / "postgres"), "-D", str(data / "db"), "-k", str(data)]
        argv += ["-h", "127.0.0.1", "-p", str(self.pg_port), "-F"]
        proc = self._spawn(
            "postgres", argv, stop_signal=signal.SIGINT, preexec=preexec, env=env, cwd=data
        )
        _wait(lambda: _tcp_open(self.pg_port), "PostgreSQL", proc)
        time.sleep(0.3)  # accepting connections shortly after the port opens
        return proc

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        for _ in range(50):
            done = subprocess.run(
                [
                    str(PG_BIN / "psql"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.pg_port),
                    "-U",
                    "baton",
                    "-d",
                    "postgres",
                    "-c",
                    f'CREATE DATABASE "{name}"',
                ],
                capture_output=True,
            )
            if done.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"cannot create database {name}: {done.stderr.decode()}")
        return f"postgresql+asyncpg://baton@127.0.0.1:{self.pg_port}/{name}"

    # ---- the edge

    def start_edge(self, sip_port: int | None = None) -> tuple[Proc, Proc]:
        """Kamailio and the edge sync."""
        self.sip_port = sip_port or free_udp_tcp_port()
        edge = self.root / "edge"
        (edge / "run").mkdir(parents=True, exist_ok=True)
        data = edge / "data"
        data.mkdir(exist_ok=True)
        (data / "dispatcher.list").write_text("")
        (data / "tenants").write_text(
            "key_name(str) key_type(int) value_type(int) key_value(str) expires(int)\n"
        )
        cfg = KAMAILIO_CFG.read_text()
        cfg = cfg.replace("@SIP_LISTEN@", f"udp:127.0.0.1:{self.sip_port}")
        cfg = cfg.replace("@DATA_DIR@", str(data)).replace("@CTL_SOCKET@", self.ctl)
        cfg = cfg.replace("@PEER_SECRET@", self.peer_secret)
        (edge / "kamailio.cfg").write_text(cfg)
        sync = self._spawn(
            "edge-sync",
            [
                self.python,
                "-m",
                "baton.service.cluster.edge",
                "--etcd",
                self.etcd,
                "--dir",
                str(data),
                "--ctl",
                self.ctl,
            ],
        )
        kamailio = self.start_kamailio()
        return kamailio, sync

    @property
    def ctl(self) -> str:
        return f"unix:{self.root / 'edge' / 'run' / 'kamailio_ctl'}"

    def start_kamailio(self) -> Proc:
        edge = self.root / "edge"
        run = edge / "run"
        proc = self._spawn(
            "kamailio",
            [
                "kamailio",
                "-DD",
                "-E",
                "-f",
                str(edge / "kamailio.cfg"),
                "-Y",
                str(run),
                "-w",
                str(run),
            ],
        )
        _wait(lambda: (run / "kamailio_ctl").exists(), "Kamailio", proc)
        return proc

    # ---- shards

    def start_shard(self, config: Path, name: str) -> Proc:
        main = "import sys; from baton.cli import main; sys.exit(main())"
        return self._spawn(name, [self.python, "-c", main, "serve", "--config", str(config)])

    def stop(self) -> None:
        """Stop every process started here, newest first, each by its pid."""
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.procs.clear()
        for folder in self.scratch:
            shutil.rmtree(folder, ignore_errors=True)
        self.scratch.clear()


def tenant_toml(
    tenant: str,
    database: str,
    *,
    users: Sequence[tuple[str, str, str, str | None]],
    emergency: str | None = "112",
    extra: str = "",
    peers: tuple[str, str, Sequence[str]] | None = None,
) -> str:
    """A tenant's centre config: ``users`` are (id, number, role, static contact or None);
    ``peers`` (edge address, secret, the other tenants' number prefixes) lets it call them."""
    lines = [f'tenant = "{tenant}"', 'switch = "sip"', f'database = "{database}"']
    # relative to this file's folder (the cluster's --dir), as every path of a centre file is
    lines += [f'recordings = "{tenant}/recordings"', "", "[dispatch]"]
    if emergency:
        lines.append(f'emergency_number = "{emergency}"')
    lines += ["", "[sip]", f'realm = "{tenant}"', "rtp_timeout = 0", "session_expires = 0", ""]
    if peers is not None:
        edge, secret, prefixes = peers
        numbers = ", ".join(f'"{n}"' for n in prefixes)
        lines += ["[sip.peers]", f'edge = "{edge}"', f'secret = "{secret}"']
        lines += [f"numbers = [{numbers}]", "lines = 8", ""]
    for uid, number, role, contact in users:
        lines += ["[[users]]", f'id = "{uid}"', f'number = "{number}"', f'password = "{uid}-pw"']
        lines.append(f'role = "{role}"')
        if contact:
            lines.append(f'contact = "{contact}"')
        lines.append("")
    return "\n".join(lines) + extra


def shard_toml(
    name: str,
    etcd: str | Sequence[str],
    placements: dict[str, dict[str, str]],
    *,
    ttl: float = 3.0,
    standby_delay: float | None = None,
) -> str:
    """A shard's file: ``placements`` is tenant → {config, role, sip, rtp_ports, api}."""
    endpoints = ", ".join(f'"{e}"' for e in ([etcd] if isinstance(etcd, str) else etcd))
    lines = ["[cluster]", f'name = "{name}"', f"etcd = [{endpoints}]", f"ttl = {ttl}"]
    if standby_delay is not None:
        lines.append(f"standby_delay = {standby_delay}")
    lines.append("")
    lines += ["[log]", 'format = "text"', ""]
    for tenant, p in placements.items():
        lines.append(f"[cluster.tenants.{tenant}]")
        lines += [f'{k} = "{v}"' for k, v in p.items()]
        lines.append("")
    return "\n".join(lines)


def banner(
    cluster: LocalCluster, tenants: Sequence[str], consoles: dict[str, list[tuple[str, str]]]
) -> str:
    """What the runner prints once everything started: where phones and dispatchers go, and
    the pid of every process (to kill one and watch the cluster cope)."""
    lines = [
        "",
        f"  Baton cluster on loopback: tenants {', '.join(tenants)}",
        f"  phones register to udp:127.0.0.1:{cluster.sip_port} (the edge): user acme-unit1,"
        " password acme-unit1-pw, realm acme; acme's numbers are 2xxx, bravo's 3xxx",
        "  (a call between them crosses the edge)",
    ]
    for tenant in tenants:
        where = ", ".join(f"http://{api}/ on {shard}" for shard, api in consoles[tenant])
        lines.append(
            f"  {tenant}'s console (user {tenant}-disp, password {tenant}-disp-pw; "
            f"{tenant}-admin, {tenant}-admin-pw provisions): "
            f"on the shard holding its lease — {where}"
        )
    lines.append(f"  etcd 127.0.0.1:{cluster.etcd_port}, PostgreSQL 127.0.0.1:{cluster.pg_port}")
    lines.append("  processes: " + ", ".join(f"{p.name} {p.pid}" for p in cluster.procs))
    lines.append(
        f"  logs and data in {cluster.root}; a process that exits is reported and the rest goes"
        f" on; `kill -USR1 {os.getpid()}` starts what exited again; Ctrl-C stops everything"
    )
    return "\n".join(lines) + "\n"


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the cluster like Ctrl-C: every process started, by its pid."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m baton.service.cluster.local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("var/cluster"),
        help="where every process keeps its data and logs (var/cluster); wiped at each start,"
        " so only a folder this runner made, or an empty one, is taken",
    )
    p.add_argument("--shards", type=int, default=2, help="how many shards (2)")
    p.add_argument("--sip-port", type=int, default=5060, help="the edge's SIP port")
    args = p.parse_args(argv)
    root = args.dir.resolve()
    try:
        prepare_dir(root)
    except NotOurs as exc:
        print(f"deploy/local: {exc}", file=sys.stderr)
        return 2
    cluster = LocalCluster(root)
    try:
        cluster.start_etcd()
        cluster.start_postgres()
        tenants = ["acme", "bravo"]
        n = max(1, args.shards)
        files = {}
        consoles: dict[str, list[tuple[str, str]]] = {t: [] for t in tenants}
        for i, tenant in enumerate(tenants):
            db = cluster.create_database(tenant)
            users = [
                (f"{tenant}-disp", f"{i + 2}001", "dispatcher", None),
                (f"{tenant}-unit1", f"{i + 2}101", "field", None),
                (f"{tenant}-unit2", f"{i + 2}102", "field", None),
                # provisioning over the API (docs/service.md) needs an admin
                (f"{tenant}-admin", f"{i + 2}009", "admin", None),
            ]
            files[tenant] = root / f"{tenant}.toml"
            # Each tenant's numbers start with its own digit; the others' are sent to the edge.
            others = [str(k + 2) for k in range(len(tenants)) if k != i]
            peers = (f"udp:127.0.0.1:{args.sip_port}", cluster.peer_secret, others)
            files[tenant].write_text(tenant_toml(tenant, db, users=users, peers=peers))
        for s in range(n):
            placements = {}
            for i, tenant in enumerate(tenants):
                role = "active" if i % n == s else "standby"
                placements[tenant] = {
                    "config": str(files[tenant]),
                    "role": role,
                    "sip": f"udp:127.0.0.1:{5100 + 10 * s + i}",
                    "rtp_ports": f"{31000 + 1000 * s + 200 * i}-{31000 + 1000 * s + 200 * i + 199}",
                    "api": f"127.0.0.1:{8100 + 10 * s + i}",
                }
                consoles[tenant].append((f"shard-{s}", placements[tenant]["api"]))
            path = root / f"shard-{s}.toml"
            path.write_text(shard_toml(f"shard-{s}", cluster.etcd, placements))
            cluster.start_shard(path, f"shard-{s}")
        cluster.start_edge(args.sip_port)
        print(banner(cluster, tenants, consoles), flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        restart = threading.Event()
        signal.signal(signal.SIGUSR1, lambda signum, frame: restart.set())
        while True:
            for proc in cluster.exited():
                print(
                    f"{proc.name} (pid {proc.pid}) exited with status {proc.popen.returncode}; "
                    f"the rest goes on. `kill -USR1 {os.getpid()}` starts it again.",
                    flush=True,
                )
            if restart.is_set():
                restart.clear()
                for proc in cluster.respawn_exited():
                    print(f"{proc.name} started again (pid {proc.pid})", flush=True)
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
