"""The service's configuration: one TOML file, validated at start.

Every problem is reported with the key that holds it, in the form an operator can find in the
file (``users[2].password: field required``, ``groups[0].members[1]: unknown user 'zed'``), and
*all* problems are reported at once, so a broken file is fixed in one pass.

Shape (see ``examples/demo.toml`` for a complete one)::

    switch = "sim"                       # or "sip"
    database = "sqlite+aiosqlite:///var/baton.db"
    recordings = "var/recordings"

    [api]
    listen = "127.0.0.1:8080"            # loopback only unless public = true

    [roles.dispatcher]                   # optional: overrides or extends the built-in roles
    permissions = ["call", "conference", "monitor"]
    max_priority = "FLASH"

    [[users]]
    id = "disp1"
    name = "Dispatcher 1"
    numbers = ["2001"]
    password = "secret"
    role = "dispatcher"
    keep = true

    [[groups]]
    id = "north"
    members = ["unit1", "unit2"]

    [[meetings]]
    id = "ops"
    number = "3000"

    [sip]                                # passed to the SIP adapter untouched
    listen = ["udp:127.0.0.1:5060"]
    realm = "baton"

Contract: :func:`load_config` returns a :class:`Config` whose cross-references (roles, group
members, unique ids and numbers) have been checked, or raises :class:`ConfigError` listing every
problem. The ``[sip]`` table is not interpreted here: the SIP adapter validates it.
"""

from __future__ import annotations

import copy
import ipaddress
import tomllib
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from baton.core import Priority
from baton.switch.sip.config import tls_pair_problem
from baton.switch.sip.transport import ListenAddress

__all__ = [
    "BUILTIN_ROLES",
    "ApiConfig",
    "ApiTlsConfig",
    "Config",
    "ConfigError",
    "DispatchConfig",
    "GroupConfig",
    "LogConfig",
    "MeetingConfig",
    "RecordingConfig",
    "RoleConfig",
    "SimConfig",
    "SimPhoneConfig",
    "UserConfig",
    "anchor_paths",
    "cross_check",
    "format_loc",
    "load_config",
    "parse_config",
    "parse_priority",
    "problem_message",
]

#: What a user id, group id or meeting id may contain: it appears in URLs and in SIP user parts.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ConfigError(Exception):
    """The configuration is unusable. ``problems`` holds one ``key: message`` line each; the
    service must not start. Fix the file and start again."""

    def __init__(self, source: str, problems: list[str], partial: Config | None = None) -> None:
        self.source = source
        self.problems = problems
        #: the file with every bad key left at its default, when it could be repaired: what
        #: ``baton serve --check`` runs its further checks on (plug-ins, permissions, switch),
        #: so that a problem of the file does not hide theirs
        self.partial = partial
        lines = "\n  ".join(problems)
        super().__init__(f"bad configuration in {source}:\n  {lines}")


def parse_priority(value: object) -> int:
    """A priority from the config or the API: a level name (``"flash"``, ``"FLASH_OVERRIDE"``,
    ``"flash-override"``) or an integer. Raises ``ValueError`` naming the accepted names."""
    if isinstance(value, bool):  # bool is an int; True is not a priority
        raise ValueError("a priority is a level name or an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, Priority):
        return int(value)
    if isinstance(value, str):
        key = value.strip().upper().replace("-", "_").replace(" ", "_")
        if key in Priority.__members__:
            return int(Priority[key])
        try:
            return int(key)
        except ValueError:
            pass
    names = ", ".join(p.name for p in Priority)
    raise ValueError(f"unknown priority {value!r}; use one of {names} or an integer")


class _Model(BaseModel):
    # Unknown keys are errors: a misspelt key silently ignored is a setting silently lost.
    # Numbers are finite: an infinite or NaN duration would pass --check and break at run time.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RoleConfig(_Model):
    """What a role may do. ``permissions`` names flow permissions (``call``, ``monitor``,
    ``barge_in`` …) and service permissions (``audit``, ``tokens``); ``"*"`` grants all.
    ``max_priority`` caps the priority of any flow a member starts. ``position`` marks a
    dispatcher role: its users are dispatcher positions. ``scope`` says whom its users may act
    for through the API (see docs/service.md, Roles and permissions): ``self`` (their own line),
    ``groups`` (and their groups' members), ``centre`` (every user of this centre) or ``all``;
    unset, a position role covers the centre and any other role only itself.

    A table named like a built-in role *extends* it: its ``permissions`` are added to the
    built-in's and the keys it sets override; ``replace = true`` defines the role from scratch."""

    description: str = ""
    permissions: tuple[str, ...] = ()
    max_priority: int = int(Priority.ROUTINE)
    position: bool = False
    scope: Literal["self", "groups", "centre", "all"] | None = None
    replace: bool = False

    @property
    def effective_scope(self) -> str:
        if self.scope is not None:
            return self.scope
        return "centre" if self.position else "self"

    @field_validator("max_priority", mode="before")
    @classmethod
    def _priority(cls, v: object) -> int:
        return parse_priority(v)


#: Permissions every dispatch action needs (the flow library's ``spec.permission`` values and the
#: service's own). A role may name others: a new flow can bring a new permission.
DISPATCH_PERMISSIONS = (
    "start",  # start flows that name no permission
    "call",
    "group_call",
    "conference",
    "broadcast",
    "monitor",
    "whisper",
    "barge_in",
    "force_release",
    "transfer",
    "hold",
    "pickup",
    "ptt",  # push-to-talk groups: open one, request and release the floor
    "roll_call",
    "polling",
    "queue",
    "emergency",
    "end_emergency",
    "meeting",  # meeting controls: mute, kick, end
    "recordings",
)

#: The service's own permissions (docs/service.md, "Roles and permissions").
SERVICE_PERMISSIONS = ("audit", "tokens", "positions", "export", "provision")


def unknown_permissions(roles: Mapping[str, RoleConfig], named: Iterable[str]) -> list[str]:
    """A ``roles.NAME.permissions[i]: …`` problem for each permission that neither the service
    nor any flow of the library (``named``: each flow's ``spec.permission``) names — a
    misspelt one (``barge-in``) would otherwise grant nothing, silently."""
    known = {"*", *DISPATCH_PERMISSIONS, *SERVICE_PERMISSIONS, *named}
    return [
        f"roles.{name}.permissions[{i}]: unknown permission {perm!r}; no flow and not the "
        f"service names it (known: {', '.join(sorted(known - {'*'}))})"
        for name, role in roles.items()
        for i, perm in enumerate(role.permissions)
        if perm not in known
    ]


BUILTIN_ROLES: dict[str, RoleConfig] = {
    "admin": RoleConfig(
        description="everything, including provisioning, the audit log and others' tokens",
        permissions=("*",),
        max_priority=int(Priority.EMERGENCY),
        position=True,
        scope="all",
    ),
    "supervisor": RoleConfig(
        description="a dispatcher who may also barge in, force release and end emergencies",
        permissions=(*DISPATCH_PERMISSIONS, "audit", "positions", "export"),
        max_priority=int(Priority.EMERGENCY),
        position=True,
        scope="all",
    ),
    "dispatcher": RoleConfig(
        description="a dispatch position: calls, conferences, monitoring, emergencies",
        permissions=tuple(
            p
            for p in DISPATCH_PERMISSIONS
            if p not in ("barge_in", "force_release", "end_emergency")
        ),
        max_priority=int(Priority.EMERGENCY),
        position=True,
        scope="centre",
    ),
    "field": RoleConfig(
        description="a field user (radio, phone): acts for its own line only",
        permissions=("start", "call", "ptt"),
        max_priority=int(Priority.PRIORITY),
        scope="self",
    ),
    "observer": RoleConfig(
        description="read-only: sees the console, changes nothing",
        permissions=(),
        max_priority=int(Priority.ROUTINE),
        scope="self",
    ),
}


class SimPhoneConfig(_Model):
    """How a user's virtual phone behaves on the ``sim`` switch (``baton serve --sim``)."""

    behaviour: Literal["answers", "busy", "never_answers", "rejects", "unreachable"] = "answers"
    answer_after: float = Field(default=1.5, ge=0)
    hangup_after: float | None = Field(default=None, gt=0)


class UserConfig(_Model):
    """One user: a phone, a field unit or a dispatcher position."""

    id: str = Field(pattern=ID_PATTERN)
    name: str | None = None
    numbers: tuple[str, ...] = ()
    password: str = Field(min_length=1)
    role: str = "field"
    max_priority: int | None = None
    keep: bool = False
    contact: str | None = None  # a static SIP contact instead of REGISTER (for the SIP adapter)
    srtp: Literal["off", "optional", "required"] | None = None  # overrides [sip] srtp for this user
    sim: SimPhoneConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_number(cls, data: Any) -> Any:
        # The SIP issue's examples write ``number = "1001"``; accept it as a one-element list.
        if isinstance(data, dict) and "number" in data:
            data = dict(data)
            number = data.pop("number")
            if "numbers" in data:
                raise ValueError("give either number or numbers, not both")
            data["numbers"] = [number]
        return data

    @field_validator("max_priority", mode="before")
    @classmethod
    def _priority(cls, v: object) -> int | None:
        return None if v is None else parse_priority(v)

    @field_validator("numbers")
    @classmethod
    def _numbers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for n in v:
            if not n or not all(c.isdigit() or c in "*#+" for c in n):
                raise ValueError(f"{n!r} is not a dialable number (digits, *, #, +)")
        return v

    @property
    def display_name(self) -> str:
        return self.name or self.id


class GroupConfig(_Model):
    """A named set of users (a talk group, a unit): usable wherever a flow takes a user list."""

    id: str = Field(pattern=ID_PATTERN)
    name: str | None = None
    members: tuple[str, ...] = ()
    number: str | None = None
    mode: Literal["call", "ptt"] = "call"  # what calling ``number`` opens: a group call, or PTT


class MeetingConfig(_Model):
    """A dial-in meeting room: calling ``number`` puts the caller in meeting ``id``."""

    id: str = Field(pattern=ID_PATTERN)
    number: str
    name: str | None = None


class DispatchConfig(_Model):
    """The dispatch centre's numbers and its queue of callers waiting for a position."""

    number: str | None = None  # calling it lands in the dispatcher queue
    emergency_number: str | None = None  # calling it raises an emergency to the positions
    queue_timeout: float = Field(default=120.0, gt=0)
    overflow: Literal["busy", "message", "transfer"] = "busy"
    overflow_to: str | None = None  # the user an overflowing call is put through to
    auto_assign: bool = True  # free positions take waiting calls without a click
    ring_timeout: float = Field(default=20.0, gt=0)  # an offer rings a position this long
    retry_after: float = Field(default=10.0, ge=0)  # a position that failed an offer rests
    wrap_up: float = Field(default=0.0, ge=0)  # seconds of wrap-up after a call (0: none)
    service_level: float = Field(default=20.0, gt=0)  # "answered within N s" in the figures
    agent_state: Literal["ready", "logged_out"] = "ready"  # positions' state at start-up
    escalate_after: float = Field(default=30.0, ge=0)  # an unacknowledged emergency (0: never)

    @model_validator(mode="after")
    def _check(self) -> DispatchConfig:
        if self.overflow == "transfer" and self.overflow_to is None:
            raise ValueError("overflow = 'transfer' needs overflow_to (a user id)")
        return self


class FlowsConfig(_Model):
    """Custom flows: plug-in modules (``package.module`` or ``package.module:flow``) loaded
    beside the library, and whether installed ``baton.flows`` entry points are too."""

    plugins: tuple[str, ...] = ()
    entry_points: bool = True
    paths: tuple[Path, ...] = ()  # folders to import plug-ins from, relative to the config file

    @field_validator("plugins")
    @classmethod
    def _refs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for ref in v:
            module, _, attr = ref.partition(":")
            if (
                not module
                or not all(p.isidentifier() for p in module.split("."))
                or (":" in ref and not attr.isidentifier())
            ):
                raise ValueError(f"{ref!r} is not 'package.module' or 'package.module:flow'")
        return v


class ApiTlsConfig(_Model):
    """HTTPS for the API and the console: a PEM certificate (chain) and its private key, paths
    relative to the config file. Served over TLS, the session cookie is ``Secure``."""

    certificate: Path
    key: Path


class ApiConfig(_Model):
    """Where the HTTP API and the console listen, and how sessions behave."""

    listen: str = "127.0.0.1:8080"
    public: bool = False  # must be set to listen on anything but loopback
    # At most a year (a leap one): a cookie's age is an integer count of seconds.
    session_hours: float = Field(default=12.0, gt=0, le=24 * 366)
    cookie_secure: bool = False  # set behind TLS (served over [api.tls], cookies are Secure)
    #: A bearer token Prometheus may scrape ``/metrics`` with (any user's session or API token
    #: works too); unset, only logged-in users may read the metrics.
    metrics_token: str | None = Field(default=None, min_length=16)
    tls: ApiTlsConfig | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def secure_cookies(self) -> bool:
        """Whether the session cookie is ``Secure``: served over TLS, or told so (a proxy)."""
        return self.cookie_secure or self.tls is not None

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @model_validator(mode="after")
    def _check_listen(self) -> ApiConfig:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"listen must be HOST:PORT, not {self.listen!r}")
        host = host.strip("[]")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback and not self.public:
            raise ValueError(
                f"listen {self.listen!r} is not a loopback address; set public = true to expose "
                "the API beyond this machine"
            )
        return self


class LogConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class SimConfig(_Model):
    """The ``sim`` switch: default phone behaviour and demo activity."""

    answer_after: float = Field(default=1.5, ge=0)
    activity: bool = False  # field users call in now and then, so a demo has something to show
    activity_every: float = Field(default=20.0, gt=0)


class RecordingConfig(_Model):
    """Voice logging: which calls are recorded, and for how long recordings are kept
    (docs/service.md, "Voice logging")."""

    positions: bool = True  # every call of a dispatcher position
    roles: tuple[str, ...] = ()  # every call of the users with these roles
    users: tuple[str, ...] = ()  # every call of these users
    exclude: tuple[str, ...] = ()  # users whose calls the rules above never record
    ptt: bool = True  # every talk burst of a push-to-talk group, with its talker
    groups: tuple[str, ...] = ()  # only these PTT groups' bursts (empty: every group)
    emergencies: bool = True  # every user held by an emergency, whatever the rules above say
    retention_days: float = Field(default=0.0, ge=0)  # older recordings are removed (0: never)
    sweep_every: float = Field(default=3600.0, gt=0)  # seconds between retention sweeps


class Config(_Model):
    """The whole configuration. ``source`` is where it was read from (for messages)."""

    #: The tenant (a dispatch centre, a PoC customer) this file's users, groups, meetings, roles
    #: and numbers belong to; nothing crosses tenants but SIP calls (docs/cluster.md).
    tenant: str = Field(default="default", pattern=ID_PATTERN)
    switch: Literal["sim", "sip"] = "sim"
    database: str = "sqlite+aiosqlite:///var/baton.db"
    recordings: Path = Path("var/recordings")
    prompts: Path = Path("var/prompts")  # the WAV prompts a flow may be asked to play
    recording: RecordingConfig = RecordingConfig()
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    roles: dict[str, RoleConfig] = {}
    users: tuple[UserConfig, ...] = Field(min_length=1)
    groups: tuple[GroupConfig, ...] = ()
    meetings: tuple[MeetingConfig, ...] = ()
    dispatch: DispatchConfig = DispatchConfig()
    flows: FlowsConfig = FlowsConfig()
    sip: dict[str, Any] = {}
    sim: SimConfig = SimConfig()
    source: str = "<config>"

    @field_validator("database")
    @classmethod
    def _database(cls, v: str) -> str:
        return normalise_database_url(v)

    # ---- views

    @property
    def all_roles(self) -> dict[str, RoleConfig]:
        """The built-in roles, extended by ``[roles.*]`` and new roles added. A table named like
        a built-in role adds its ``permissions`` to the built-in's and overrides only the keys
        it sets (so ``[roles.dispatcher] permissions = ["escort"]`` keeps the dispatcher's cap,
        position and scope); with ``replace = true`` it defines the role from scratch, keeping
        only the built-in's scope unless it sets one."""
        out = dict(BUILTIN_ROLES)
        for name, role in self.roles.items():
            builtin = BUILTIN_ROLES.get(name)
            if builtin is not None and not role.replace:
                update = {k: getattr(role, k) for k in role.model_fields_set if k != "permissions"}
                update["permissions"] = tuple(
                    dict.fromkeys((*builtin.permissions, *role.permissions))
                )
                role = builtin.model_copy(update=update)
            elif role.scope is None and builtin is not None:
                role = role.model_copy(update={"scope": builtin.scope})
            out[name] = role
        return out

    def role_of(self, user: UserConfig) -> RoleConfig:
        return self.all_roles[user.role]

    def user(self, user_id: str) -> UserConfig | None:
        return next((u for u in self.users if u.id == user_id), None)

    @property
    def positions(self) -> list[UserConfig]:
        """The dispatcher positions: users whose role is a dispatcher role."""
        roles = self.all_roles
        return [u for u in self.users if (r := roles.get(u.role)) is not None and r.position]


def normalise_database_url(url: str) -> str:
    """Accept a SQLAlchemy async URL, a sync URL of a supported database, or a bare file path
    (a SQLite file). Return the async URL the store uses."""
    if "://" not in url:
        return f"sqlite+aiosqlite:///{url}"
    scheme, rest = url.split("://", 1)
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(
        f"unsupported database {scheme!r}: use a SQLite file (sqlite+aiosqlite:///var/baton.db) "
        "or PostgreSQL (postgresql+asyncpg://user:pass@host/db)"
    )


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``("users", 2, "password")`` → ``users[2].password``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def problem_message(err: dict[str, Any]) -> str:
    """One validation error in the words of docs/service.md ("unknown key (misspelt?)")."""
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (misspelt?)"
    if err.get("type") in ("path_type", "path_parsing"):  # not "for <class 'pathlib.Path'>"
        msg = "a path (text) is expected"
    if (
        err.get("type") == "string_pattern_mismatch"
        and (err.get("ctx") or {}).get("pattern") == ID_PATTERN
    ):  # an id or a tenant: say the rule in words, not as a regular expression
        msg = (
            f"{err.get('input')!r} is not a valid name: 1 to 64 letters, digits, '_', '.' or "
            "'-', starting with a letter or a digit"
        )
    return msg[:1].lower() + msg[1:]


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML document. Raises :class:`ConfigError` with every problem: those of
    each table, and the checks across tables (run on the tables that are valid, so one bad
    table does not hide the next problem).

    A ``[sip]`` table without a ``switch`` key selects the ``sip`` switch (a SIP table means
    real phones; docs/service.md, Configuration)."""
    data = dict(data)
    if data.get("sip") and "switch" not in data:
        data["switch"] = "sip"
    try:
        config = Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems = [
            f"{format_loc(e['loc'])}: {problem_message(dict(e))}"
            for e in exc.errors()
            if not _echo_of_bad_entries(e, data)
        ]
        partial = _repaired({**data, "source": source}, exc, problems)
        if partial is not None:
            problems += [p for p in cross_check(partial) if p not in problems]
        raise ConfigError(source, problems, partial) from None
    problems = cross_check(config)
    if problems:
        raise ConfigError(source, problems, config)
    return config


#: Required keys a stand-in can fill so that an entry missing one still takes part in the
#: checks across tables: an id no entry can name, a password nothing checks.
_STAND_INS: dict[str, str] = {"id": "missing-id", "password": "missing-password"}


def _echo_of_bad_entries(err: Any, data: dict[str, Any]) -> bool:
    """``users: tuple should have at least 1 item after validation, not 0``: pydantic counts
    only the entries that passed, so a file whose every user is bad gets this line as well as
    each entry's own — noise that says a user is missing when one is there."""
    users = data.get("users")
    return (
        err["type"] == "too_short"
        and tuple(err["loc"]) == ("users",)
        and isinstance(users, list)
        and len(users) > 0
    )


def _repaired(data: dict[str, Any], exc: ValidationError, problems: list[str]) -> Config | None:
    """The config with every bad key left at its default (or a stand-in, for a missing id or
    password), so the checks across tables still run when a table or an entry is bad
    (docs/service.md, Configuration: every problem at once). A check that could only run once
    its table's keys were valid (a public listen address next to a bad ``session_hours``) adds
    its problem to ``problems``. None when it cannot be repaired: a bad list entry as a whole,
    or a missing key without a default or stand-in."""
    fixed = copy.deepcopy(data)
    reported: set[tuple[int | str, ...]] = set()  # keys already named by a problem
    for _ in range(4):  # each round may uncover a table's own check, run once its keys pass
        for err in exc.errors():
            if _echo_of_bad_entries(err, data):
                continue  # the entries' own errors are repaired: the count follows
            reported.add(tuple(err["loc"]))
            if not _repair(fixed, err["loc"], err["type"] == "missing"):
                return None
        try:
            return Config.model_validate(fixed)
        except ValidationError as again:
            exc = again
            # A bad key just removed comes back as missing: its problem is said already
            # (`users[0].id: string should match …`, not also `users[0].id: field required`).
            found = [
                f"{format_loc(e['loc'])}: {problem_message(dict(e))}"
                for e in exc.errors()
                if not _echo_of_bad_entries(e, fixed)
                and not (e["type"] == "missing" and tuple(e["loc"]) in reported)
            ]
            problems += [p for p in found if p not in problems]
    return None


def _repair(data: dict[str, Any], loc: tuple[int | str, ...], missing: bool) -> bool:
    """Remove (or fill, when ``missing``) the key ``loc`` names; False when it cannot."""
    # Walk to the innermost table key that exists: a bad list element or a model's own check
    # (a loc with validator names in it) takes its whole key, never shifting a list's indices.
    node: Any = data
    holder: dict[str, Any] | None = None
    key: str | None = None
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            holder, key, node = node, part, node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif missing and isinstance(node, dict) and part == loc[-1] and part in _STAND_INS:
            node[part] = _STAND_INS[part]
            return True
        else:
            break
    if holder is None or key is None or missing:
        return False
    if holder is data.get("roles") or (
        holder is data and key in ("users", "groups", "meetings", "roles")
    ):
        return False  # an entry's keys are dropped, never an entry (others may name it)
    del holder[key]
    return True


def load_config(path: str | Path, *, base: Path | None = None) -> Config:
    """Read and validate a TOML file. Raises :class:`ConfigError` (also for a missing file or a
    TOML syntax error).

    Every relative path written in the file is read from the file's own folder (``base``
    instead, when given: the built-in demo, which ships inside the package, keeps its ``var/``
    in the folder it is run from): ``database`` (a SQLite file), ``recordings``, ``prompts``,
    ``[flows] paths``, ``[api.tls]`` and ``[sip.tls]``. A key left out keeps its default,
    relative to the folder ``baton serve`` runs in (``var/baton.db``…); a path given on the
    command line (``--database``) is relative to that folder too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [f"TOML syntax: {exc}"]) from None
    try:
        config = anchor_paths(parse_config(data, str(p)), p.parent if base is None else base)
    except ConfigError as exc:
        if exc.partial is not None:  # its paths read as the file's, as a good file's are
            exc.partial = anchor_paths(exc.partial, p.parent if base is None else base)
        raise
    tls = config.api.tls
    if tls is not None:  # the API's certificate and key must be readable, and a pair
        problems = [
            f"api.tls.{name}: cannot read {path}"
            for name, path in (("certificate", tls.certificate), ("key", tls.key))
            if not path.is_file()
        ]
        if not problems:  # readable: now usable together, or the server would die at start
            problem = tls_pair_problem(str(tls.certificate), str(tls.key))
            if problem is not None:
                problems.append(f"api.tls: {problem}")
        if problems:
            raise ConfigError(str(p), problems)
    return config


def anchor_paths(config: Config, base: Path) -> Config:
    """``config`` with the relative paths its file wrote read from ``base`` (made absolute):
    one rule for every path in the file (docs/service.md, Configuration). Keys the file left
    out keep their defaults."""
    given = config.model_fields_set
    update: dict[str, Any] = {}
    if "recordings" in given:
        update["recordings"] = _anchored(base, config.recordings)
    if "prompts" in given:
        update["prompts"] = _anchored(base, config.prompts)
    if "database" in given:
        update["database"] = _anchored_database(base, config.database)
    if config.flows.paths:
        paths = tuple(_anchored(base, q) for q in config.flows.paths)
        update["flows"] = config.flows.model_copy(update={"paths": paths})
    if config.api.tls is not None:
        tls = config.api.tls
        anchored = ApiTlsConfig(
            certificate=_anchored(base, tls.certificate), key=_anchored(base, tls.key)
        )
        update["api"] = config.api.model_copy(update={"tls": anchored})
    sip_tls = config.sip.get("tls")
    if isinstance(sip_tls, dict):  # (its shape is the SIP adapter's to check: only text moves)
        moved = {
            k: str(_anchored(base, Path(v))) if k in _SIP_TLS_FILES and isinstance(v, str) and v
            else v
            for k, v in sip_tls.items()
        }  # fmt: skip
        update["sip"] = {**config.sip, "tls": moved}
    return config.model_copy(update=update) if update else config


#: The keys of ``[sip.tls]`` that name files.
_SIP_TLS_FILES = frozenset({"certificate", "key", "ca"})


def _anchored(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def _anchored_database(base: Path, url: str) -> str:
    """A SQLite URL whose file is a relative path, with the path read from ``base``."""
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return url  # PostgreSQL: no path
    file, sep, query = url[len(prefix) :].partition("?")
    if not file or file.startswith("/") or file == ":memory:" or file.startswith("file:"):
        return url
    return f"{prefix}{_anchored(base, Path(file))}{sep}{query}"


#: The positions' feature codes (docs/service.md, "The numbering plan"): routed before every
#: other number, so a user, group, room or dispatcher number equal to one would never ring.
FEATURE_NUMBERS = {"*70": "log out", "*71": "ready", "*72": "not ready"}


def cross_check(config: Config) -> list[str]:
    """The checks that span several tables: unique ids and numbers, known roles and members."""
    problems: list[str] = []
    roles = config.all_roles
    seen_users: dict[str, int] = {}
    numbers = {n: f"the feature code {n} ({what})" for n, what in FEATURE_NUMBERS.items()}

    def number(n: str, owner: str, key: str) -> None:
        if n in numbers:
            problems.append(f"{key}: number {n!r} is already used by {numbers[n]}")
        else:
            numbers[n] = owner

    for i, user in enumerate(config.users):
        if user.id in seen_users:
            problems.append(
                f"users[{i}].id: duplicate user id {user.id!r} (see users[{seen_users[user.id]}])"
            )
        seen_users.setdefault(user.id, i)
        if user.role not in roles:
            known = ", ".join(sorted(roles))
            problems.append(f"users[{i}].role: unknown role {user.role!r} (known: {known})")
        for j, n in enumerate(user.numbers):
            number(n, f"user {user.id!r}", f"users[{i}].numbers[{j}]")
    group_ids: set[str] = set()
    for i, group in enumerate(config.groups):
        if group.id in group_ids:
            problems.append(f"groups[{i}].id: duplicate group id {group.id!r}")
        group_ids.add(group.id)
        for j, member in enumerate(group.members):
            if member not in seen_users:
                problems.append(f"groups[{i}].members[{j}]: unknown user {member!r}")
        if group.number is not None:
            number(group.number, f"group {group.id!r}", f"groups[{i}].number")
    d = config.dispatch
    if d.number is not None:
        number(d.number, "the dispatcher queue", "dispatch.number")
    if d.emergency_number is not None:
        number(d.emergency_number, "the emergency number", "dispatch.emergency_number")
    if d.overflow_to is not None and d.overflow_to not in seen_users:
        problems.append(f"dispatch.overflow_to: unknown user {d.overflow_to!r}")
    if (d.number is not None or d.emergency_number is not None) and not config.positions:
        problems.append("dispatch: a dispatcher number needs at least one dispatcher position")
    meeting_ids: set[str] = set()
    for i, meeting in enumerate(config.meetings):
        if meeting.id in meeting_ids:
            problems.append(f"meetings[{i}].id: duplicate meeting id {meeting.id!r}")
        meeting_ids.add(meeting.id)
        number(meeting.number, f"meeting {meeting.id!r}", f"meetings[{i}].number")
    rc = config.recording
    known_names: list[tuple[str, tuple[str, ...], Collection[str], str]] = [
        ("users", rc.users, set(seen_users), "user"),
        ("exclude", rc.exclude, set(seen_users), "user"),
        ("roles", rc.roles, set(roles), "role"),
        ("groups", rc.groups, group_ids, "group"),
    ]
    for key, names, valid, what in known_names:
        for j, name in enumerate(names):
            if name not in valid:
                problems.append(f"recording.{key}[{j}]: unknown {what} {name!r}")
    problems += _listen_problems(config)
    return problems


def _listen_problems(config: Config) -> list[str]:
    """The API's port taken by a SIP listener over TCP (``tcp:``, ``tls:``, ``ws:`` — a
    browser phone's SIP WebSocket is easily put on the API's port): one could never listen.
    And a plain ``ws:`` listener beside an HTTPS console, whose phone could never use it."""
    if config.switch != "sip":
        return []
    listen = config.sip.get("listen") or []
    if isinstance(listen, str):
        listen = [listen]
    out = []
    for i, text in enumerate(listen if isinstance(listen, list) else []):
        try:
            address = ListenAddress.parse(str(text))
        except ValueError:
            continue  # said by the [sip] table's own check
        if address.transport != "udp" and (address.host, address.port) == (
            config.api.host,
            config.api.port,
        ):
            out.append(
                f"api.listen: {config.api.listen} is also sip.listen[{i}] ({address}): "
                "give them different ports"
            )
        if address.transport == "ws" and config.api.tls is not None:
            # the console's phone (docs/sip.md, "WebRTC") would connect to it from an HTTPS
            # page, and browsers refuse a plain WebSocket from one (mixed content)
            out.append(
                f"sip.listen[{i}]: {address} is plain, and the console is served over HTTPS "
                "([api.tls]): browsers refuse a ws: connection from it; use wss: (with "
                "[sip.tls])"
            )
    return out
