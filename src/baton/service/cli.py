"""``baton serve``: run the dispatcher service.

::

    baton serve --config examples/demo.toml     # the switch the config names
    baton serve --sim                           # the built-in demo on virtual phones
    baton serve --config FILE --sim             # FILE's users, on virtual phones
    baton serve --config FILE --listen 127.0.0.1:9000 --database var/other.db

It validates the config (a bad one stops here, naming the key), starts the service, prints the
console URL and a dispatcher login (and, on SIP, the accounts a softphone registers with), and
serves until SIGINT or SIGTERM; then every flow is stopped, the journal flushed and the records of
the run closed, one log line says which signal stopped it, and the exit status is 0 — a stop asked
for is not a failure (``make run`` under a supervisor that sends SIGTERM stays quiet).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from baton.service.config import Config

__all__ = [
    "DEMO_CONFIG",
    "build_parser",
    "check_problems",
    "serve_main",
    "tls_options",
    "with_overrides",
]

#: The configuration ``baton serve --sim`` uses when no ``--config`` is given.
DEMO_CONFIG = Path(__file__).with_name("demo.toml")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="baton serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        "-c",
        type=Path,
        help="the TOML configuration (default with --sim: the built-in demo)",
    )
    p.add_argument(
        "--sim", action="store_true", help="run on the sim switch: virtual phones, no SIP"
    )
    p.add_argument("--listen", help="HOST:PORT for the API and console (overrides [api] listen)")
    p.add_argument("--database", help="database URL or SQLite file (overrides database)")
    p.add_argument(
        "--activity", action="store_true", help="with --sim: field users call in now and then"
    )
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.sim:
        out["switch"] = "sim"
    if args.database:
        out["database"] = args.database
    return out


def with_overrides(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with the command line's ``--sim``, ``--database``, ``--listen`` and
    ``--activity`` applied, validated again as a file would be. Only the keys the file set are
    carried over: a default written back as if it had been chosen would change what it means —
    a ``[roles.dispatcher]`` table that only adds a permission would pin the cap, position and
    scope it left to the built-in role (docs/service.md, Roles and permissions)."""
    from baton.service.config import parse_config

    changes = _overrides(args)
    if not (args.listen or args.activity or changes):
        return config
    data = config.model_dump(exclude={"source"}, exclude_unset=True)
    data.update(changes)
    if args.listen:
        data["api"] = {**data.get("api", {}), "listen": args.listen}
    if args.activity:
        data["sim"] = {**data.get("sim", {}), "activity": True}
    return parse_config(_plain(data), config.source)


def check_problems(config: Config) -> tuple[list[str], int]:
    """What ``--check`` finds beyond the file's own validation, and how many flows load: every
    problem at once (docs/service.md, Configuration) — the plug-ins', each on its own, the
    roles' unknown permissions, and the switch's own table ([sip]), validated by the switch."""
    from baton.flows.registry import load_flows
    from baton.service.config import ConfigError, unknown_permissions
    from baton.service.switches import build_switch

    problems: list[str] = []
    flows = load_flows(
        config.flows.plugins,
        entry_points=config.flows.entry_points,
        paths=config.flows.paths,
        problems=problems,
    )
    problems += unknown_permissions(config.roles, (f.permission or "start" for f in flows.values()))
    try:
        build_switch(config)
    except ConfigError as exc:
        problems += exc.problems
    return problems, len(flows)


def serve_main(argv: list[str]) -> int:
    """The ``serve`` subcommand; returns the exit status."""
    args = build_parser().parse_args(argv)
    from baton.service.config import ConfigError, load_config

    path: Path | None = args.config
    if path is None:
        if not args.sim:
            print(
                "baton serve: give --config FILE, or --sim for the built-in demo", file=sys.stderr
            )
            return 2
        path = DEMO_CONFIG
    if _is_shard(path):
        return _shard_main(path, args)
    try:
        # The built-in demo ships inside the package: its var/ is the folder it is run from.
        base = Path.cwd() if path == DEMO_CONFIG else None
        config = with_overrides(load_config(path, base=base), args)
    except ConfigError as exc:
        problems = exc.problems
        if args.check and exc.partial is not None:  # every problem at once, these too
            problems += [p for p in check_problems(exc.partial)[0] if p not in problems]
        print(f"baton serve: {ConfigError(exc.source, problems)}", file=sys.stderr)
        return 2
    if args.check:
        problems, flows = check_problems(config)
        if problems:
            print(f"baton serve: {ConfigError(str(path), problems)}", file=sys.stderr)
            return 2
        print(f"{path}: ok ({len(config.users)} users, switch {config.switch}, {flows} flows)")
        return 0
    from baton.service.logs import configure_logging

    configure_logging(config.log.level, config.log.format)
    previous = {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS}
    try:
        return asyncio.run(_serve(config))
    except Stopped as stop:
        # uvicorn handles the signal (a graceful shutdown), then raises it again with the handler
        # it found — ours; a signal before uvicorn took over lands here directly.
        logging.getLogger("baton.service").info("stopped by %s", signal.Signals(stop.signal).name)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: The signals that stop ``baton serve`` cleanly (exit status 0).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """``baton serve`` was asked to stop by ``signal`` (after uvicorn's graceful shutdown)."""

    def __init__(self, sig: int) -> None:
        super().__init__(sig)
        self.signal = sig


def _stop(sig: int, frame: Any) -> None:
    # Without this, uvicorn's re-raised SIGTERM would meet the default handler and the process
    # would die of the signal: `make run` then reports "*** [run] Terminated".
    raise Stopped(sig)


def _is_shard(path: Path) -> bool:
    """Whether ``path`` is a shard's file (a ``[cluster]`` table: docs/cluster.md)."""
    import tomllib

    try:
        return isinstance(tomllib.loads(path.read_text(encoding="utf-8")).get("cluster"), dict)
    except (OSError, tomllib.TOMLDecodeError):
        return False  # load_config reports it


def _shard_main(path: Path, args: argparse.Namespace) -> int:
    """``baton serve --config SHARD.toml``: serve the tenants of a ``[cluster]`` table while
    holding their leases, until SIGINT or SIGTERM."""
    from baton.service.cluster.config import load_shard_config
    from baton.service.config import ConfigError

    given = [
        flag
        for flag, value in (
            ("--listen", args.listen),
            ("--database", args.database),
            ("--sim", args.sim),
            ("--activity", args.activity),
        )
        if value
    ]
    if given:  # they override one centre's file; ignored here, they would mislead
        print(
            f"baton serve: {path} is a shard file: {', '.join(given)} applies to one centre's"
            " file only — set each tenant's addresses in its [cluster.tenants.NAME] placement"
            " (sip, api) and its database in the tenant's own file (docs/cluster.md)",
            file=sys.stderr,
        )
        return 2
    try:
        shard_config = load_shard_config(path)
    except ConfigError as exc:
        print(f"baton serve: {exc}", file=sys.stderr)
        return 2
    c = shard_config.cluster
    if args.check:
        # each tenant as its own file's --check sees it (as this shard would serve it), named
        # by its file: a tenant this shard stands by for is first served at a fail-over
        problems = [
            f"cluster.tenants.{name} ({c.tenants[name].config}): {problem}"
            for name, config in shard_config.tenants.items()
            for problem in check_problems(config)[0]
        ]
        if problems:
            print(f"baton serve: {ConfigError(str(path), problems)}", file=sys.stderr)
            return 2
        print(f"{path}: ok (shard {c.name}, tenants {', '.join(c.tenants)})")
        return 0
    from baton.service.logs import configure_logging

    configure_logging(shard_config.log.level, shard_config.log.format)
    return asyncio.run(_run_shard(shard_config))


async def _run_shard(shard_config: Any) -> int:
    import signal

    from baton.service.cluster.shard import Shard

    shard = Shard(shard_config)
    task = asyncio.get_running_loop().create_task(shard.run(), name="shard")
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    c = shard_config.cluster
    print(
        f"\n  Baton shard {c.name}: tenants "
        + ", ".join(f"{n} ({p.role})" for n, p in c.tenants.items())
        + f"; etcd {', '.join(c.etcd)}; lease TTL {c.ttl:g} s\n",
        flush=True,
    )
    try:
        await task
    except asyncio.CancelledError:
        pass
    return 0


def _plain(value: Any) -> Any:
    """A model dump back to TOML-like data (paths as strings)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


async def _serve(config: Any) -> int:
    import uvicorn

    from baton.core import SwitchError
    from baton.service.app import create_app
    from baton.service.config import ConfigError
    from baton.service.runtime import Service

    api = config.api
    try:
        service = Service(config)  # a bad switch table ([sip]) is a config error: said first
    except ConfigError as exc:
        print(f"baton serve: {exc}", file=sys.stderr)
        return 2
    try:
        sock = _listen(api.host, api.port)
    except OSError as exc:
        # One plain line, not uvicorn's traceback: the usual cause is another baton serve.
        why = "the address is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
        print(
            f"baton serve: cannot listen on {api.listen}: {why} "
            "(another baton serve? choose a port with --listen or [api] listen)",
            file=sys.stderr,
        )
        return 1
    # Started here rather than in uvicorn's lifespan, so that a problem only the store can reveal
    # (the config clashing with the directory provisioned over the API) is one plain message,
    # not a traceback.
    app = create_app(service, manage_lifecycle=False)
    try:
        await service.start()
    except ConfigError as exc:
        sock.close()
        await service.stop()
        print(f"baton serve: {exc}", file=sys.stderr)
        return 2
    except SwitchError as exc:  # a SIP port in use, most often: one line, not a traceback
        sock.close()
        await service.stop()
        print(f"baton serve: {exc}", file=sys.stderr)
        return 1

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                _quiet_gc()
                # The directory as started: the config's, with what the store has changed.
                _banner(service.config, service)

    server = Server(
        uvicorn.Config(
            app,
            host=api.host,
            port=api.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            ws="websockets-sansio",
            **tls_options(api),
        )
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        await service.stop()
    return 0 if server.started else 1


def tls_options(api: Any) -> dict[str, Any]:
    """uvicorn's options for ``[api.tls]`` (none when the API is served in plain HTTP)."""
    if api.tls is None:
        return {}
    return {"ssl_certfile": str(api.tls.certificate), "ssl_keyfile": str(api.tls.key)}


def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything starts (uvicorn serves on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def _quiet_gc() -> None:
    """Keep the garbage collector from stalling the loop: what start-up built (the app, the
    config, the users) is frozen out of collection, and full collections are made rare. With
    Python's defaults a full collection under load stalls the event loop for 100–300 ms —
    late media frames and SIP retransmissions (see docs/benchmarks.md, SIP signalling)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(2000, 20, 1000)


def _staffs(role: Any) -> bool:
    """A role whose users staff a dispatcher position: a position role that may take calls,
    not an administrator's (``*`` or ``provision``)."""
    granted = set(role.permissions)
    return bool(role.position) and "call" in granted and not granted & {"*", "provision"}


def _banner(config: Any, service: Any) -> None:
    api = config.api
    host = api.host if ":" not in api.host else f"[{api.host}]"
    lines = [
        "",
        f"  Baton dispatcher service — switch {config.switch}, {len(config.users)} users, run {service.run_id}",
        f"  console:  {api.scheme}://{host}:{api.port}/console/",
        f"  API docs: {api.scheme}://{host}:{api.port}/docs",
        f"  metrics:  {api.scheme}://{host}:{api.port}/metrics",
    ]
    # The login offered is a dispatcher's: a position whose role may take calls and is not an
    # administrator's (the built-in admin role is a position too, but its account is for
    # provisioning); a centre with none offers its first position as a plain login, by role.
    roles = config.all_roles
    positions = [u for u in config.positions if _staffs(roles[u.role])]
    offered = next(iter(positions or config.positions), None)
    # Passwords are SIP credentials too: a SIP centre's are never printed (the start-up output
    # ends up in logs), not even when it runs on virtual phones (`--config site.toml --sim`);
    # a centre made for virtual phones only shows its dispatcher login.
    secret_hint = f"the users' password keys in {config.source}"
    if offered is not None:
        u = offered
        shown = config.switch == "sim" and not config.sip
        secret = u.password if shown else f"(password: see {secret_hint})"
        what = "dispatcher login" if positions else "login"
        lines.append(f"  {what}: {u.id} / {secret}   ({u.display_name}, role {u.role})")
    if config.switch == "sip":
        sip = config.sip
        realm = sip.get("realm", "baton")
        listen = sip.get("listen", [])
        lines.append(
            f"  SIP: register to {', '.join(map(str, listen)) or '(see [sip] listen)'}, realm {realm}"
        )
        accounts = ", ".join(
            f"{u.id}" + (f" ({u.numbers[0]})" if u.numbers else "") for u in config.users
        )
        lines.append(f"    accounts: {accounts}")
        lines.append(f"    passwords: {secret_hint}")
    else:
        lines.append(
            "  virtual phones: drive them from the console (the Virtual phone panel) or /api/sim"
        )
    print("\n".join(lines) + "\n", flush=True)
