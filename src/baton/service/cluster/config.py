"""A shard's configuration: the ``[cluster]`` table (docs/cluster.md).

A shard's file names the consensus store, the shard, and the tenants it may serve, each with
the centre configuration of that tenant (an ordinary ``baton serve`` file: its users, groups,
meetings, roles, numbers and its database) and where *this* shard serves it::

    [cluster]
    name = "shard-a"
    etcd = ["127.0.0.1:2379"]
    ttl = 3                                   # the lease's time-to-live, seconds

    [cluster.tenants.acme]
    config = "acme.toml"                      # relative to this file
    role = "active"                           # or "standby"
    sip = ["udp:127.0.0.1:5101"]              # this shard's SIP address for the tenant
    media_host = "127.0.0.1"
    rtp_ports = "31000-31199"
    api = "127.0.0.1:8101"

Contract: :func:`load_shard_config` returns a :class:`ShardConfig` whose tenants' files are
valid (each with ``tenant`` equal to its table's name, or the default tenant's name left
unset), or raises :class:`ConfigError` listing every problem.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from baton.service.config import (
    ID_PATTERN,
    Config,
    ConfigError,
    LogConfig,
    format_loc,
    load_config,
    parse_config,
    problem_message,
)
from baton.switch.sip.transport import ListenAddress

__all__ = [
    "ClusterConfig",
    "ShardConfig",
    "TenantPlacement",
    "load_shard_config",
    "tenant_config",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantPlacement(_Model):
    """One tenant this shard may serve, and where it serves it."""

    config: Path
    role: Literal["active", "standby"] = "active"
    sip: tuple[str, ...] = ()  # overrides the tenant's [sip] listen on this shard
    media_host: str | None = None
    rtp_ports: str | None = None
    api: str | None = None  # overrides the tenant's [api] listen on this shard

    @field_validator("sip", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class ClusterConfig(_Model):
    """The ``[cluster]`` table."""

    name: str = Field(pattern=ID_PATTERN)
    etcd: tuple[str, ...] = ("127.0.0.1:2379",)
    ttl: float = Field(default=3.0, ge=1.0, le=60.0)
    prefix: str = "/baton"
    #: How long a standby lets an active shard take its tenant first, at start-up.
    standby_delay: float = Field(default=1.0, ge=0)
    #: How long, at most, a standby then leaves a free tenant to its announced active shard.
    active_grace: float = Field(default=60.0, ge=0)
    tenants: dict[str, TenantPlacement] = Field(min_length=1)

    @field_validator("tenants")
    @classmethod
    def _names(cls, v: dict[str, TenantPlacement]) -> dict[str, TenantPlacement]:
        for name in v:
            if not re.match(ID_PATTERN, name):
                raise ValueError(f"tenant name {name!r} is not an id (letters, digits, _.-)")
        return v

    @field_validator("etcd")
    @classmethod
    def _endpoints(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for e in v:
            host, sep, port = e.removeprefix("http://").rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"etcd endpoint {e!r} is not HOST:PORT")
        if not v:
            raise ValueError("give at least one etcd endpoint")
        return v


class ShardConfig(_Model):
    cluster: ClusterConfig
    log: LogConfig = LogConfig()
    tenants: dict[str, Config] = {}
    source: str = "<config>"


def tenant_config(base: Config, placement: TenantPlacement) -> Config:
    """The tenant's centre config as this shard serves it: its SIP and API addresses replaced
    by the placement's. Only the keys the tenant's file set are carried over, as for ``baton
    serve``'s command-line overrides: a default written back as if chosen would change what it
    means (a ``[roles.dispatcher]`` table that only adds a permission would pin the built-in
    role's cap, position and scope; docs/service.md, Roles and permissions)."""
    data = base.model_dump(exclude={"source"}, exclude_unset=True)
    sip = dict(data.get("sip") or {})
    if placement.sip:
        sip["listen"] = list(placement.sip)
    if placement.media_host is not None:
        sip["media_host"] = placement.media_host
    if placement.rtp_ports is not None:
        sip["rtp_ports"] = placement.rtp_ports
    data["sip"] = sip
    if placement.api is not None:
        data["api"] = {**data.get("api", {}), "listen": placement.api}
    return parse_config(_plain(data), base.source)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def is_shard_file(data: dict[str, Any]) -> bool:
    """Whether a parsed TOML document is a shard's (it has a ``[cluster]`` table)."""
    return isinstance(data.get("cluster"), dict)


def load_shard_config(path: str | Path) -> ShardConfig:
    """Read a shard's file and every tenant file it names. Raises :class:`ConfigError`."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read the file: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [f"TOML syntax: {exc}"]) from None
    try:
        shard = ShardConfig.model_validate({**data, "source": str(p)})
    except ValidationError as exc:
        raise ConfigError(
            str(p), [f"{format_loc(e['loc'])}: {problem_message(dict(e))}" for e in exc.errors()]
        ) from None
    problems: list[str] = []
    tenants: dict[str, Config] = {}
    for name, placement in shard.cluster.tenants.items():
        file = (p.parent / placement.config).resolve()
        try:
            base = load_config(file)
            tenants[name] = tenant_config(base, placement)
        except ConfigError as exc:
            # named by its file too: that is where the problem is fixed
            problems += [f"cluster.tenants.{name} ({placement.config}): {q}" for q in exc.problems]
            continue
        if base.tenant != name:
            problems.append(
                f"cluster.tenants.{name}: {file} is tenant {base.tenant!r} (set tenant = {name!r})"
            )
    problems += _shared_addresses(tenants, shard.cluster.tenants)
    problems += _shared_databases(tenants, shard.cluster.tenants)
    if problems:
        raise ConfigError(str(p), problems)
    return shard.model_copy(update={"tenants": tenants})


def _shared_databases(
    tenants: dict[str, Config], placements: dict[str, TenantPlacement]
) -> list[str]:
    """Two tenants of one shard on one database (named alike, or both left at the default
    file): each run's crash recovery would close the other tenant's records (docs/cluster.md,
    Tenants). Shards cannot see each other's files; within one, this is checked."""
    first: dict[str, str] = {}
    problems = []
    for name, config in tenants.items():
        other = first.setdefault(config.database, name)
        if other != name:
            problems.append(
                f"cluster.tenants.{name} ({placements[name].config}): database"
                f" {config.database!r} is also tenant {other}'s: each tenant needs its own"
                " database"
            )
    return problems


def _shared_addresses(
    tenants: dict[str, Config], placements: dict[str, TenantPlacement]
) -> list[str]:
    """Two tenants of one shard on the same SIP or API address: the shard serves both only
    after a fail-over, and then the second could not bind — the fail-over itself would fail.
    (A tenant's API is served on a shard only where its placement names an ``api``.)"""
    taken: dict[tuple[str, str, int], tuple[str, str]] = {}
    problems = []
    for name, config in tenants.items():
        listen = (
            config.sip.get("listen") or ["udp:127.0.0.1:5060"] if config.switch == "sip" else []
        )
        addresses = []
        for text in [listen] if isinstance(listen, str) else listen:
            try:
                a = ListenAddress.parse(str(text))
            except ValueError:
                continue  # said by the tenant's own check
            addresses.append(
                ("sip", str(a), ("udp" if a.transport == "udp" else "tcp", a.host, a.port))
            )
        if placements[name].api is not None:
            api = ("tcp", config.api.host, config.api.port)
            addresses.append(("api", config.api.listen, api))
        for key, text, where in addresses:
            other = taken.setdefault(where, (name, text))
            if other[0] != name:
                problems.append(
                    f"cluster.tenants.{name}.{key}: {text} is also tenant {other[0]}'s "
                    f"({other[1]}): a shard serving both, after a fail-over, could not bind it"
                )
    return problems
