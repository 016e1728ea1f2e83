"""The store's tables (SQLAlchemy Core). The schema itself is created by the Alembic migrations in
``migrations/versions``; these definitions are what the code reads and writes, and a test checks
that the two agree.

Times are wall-clock seconds since the epoch (``float``): portable across SQLite and PostgreSQL,
exact enough for call records, trivial to filter on. Each start of the service is a *run*; core
names (``call#1``, leg ids, event sequence numbers) are unique only within a run, so every record
carries its ``run_id``.

Every record table has ``end_reason``: how the record was closed — the leg's cause, the flow's
outcome, ``"shutdown"`` (a clean stop closed it), ``"crash"`` (the service died with it open and
the next start closed it at the crash time) or ``"restart"`` (a straggler of a run that stopped).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "audit",
    "callinfo_records",
    "directory",
    "flow_records",
    "journal",
    "leg_records",
    "metadata",
    "preemptions",
    "recordings",
    "runs",
    "tokens",
    "users",
]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

# SQLite makes only an INTEGER PRIMARY KEY an alias of the rowid (and thus autoincrementing).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("end_reason", sa.String(32)),  # stopped | crashed
    sa.Column("switch", sa.String(16), nullable=False),
    # The last sign of life (written every few seconds): a crashed run ended about then.
    sa.Column("heartbeat_at", sa.Float),
    # The switch's calls (e.g. SIP dialogs) as of the last heartbeat, to end after a crash.
    sa.Column("dialogs", sa.JSON),
)

journal = sa.Table(
    "journal",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the core's sequence number in this run
    sa.Column("t", sa.Float, nullable=False),  # the core's loop time
    sa.Column("at", sa.Float, nullable=False),  # wall clock when published
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("flow", sa.String(80)),  # the flow the event is about, if any (for traces)
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index(None, "run_id", "seq", unique=True),
    sa.Index(None, "run_id", "flow"),
)

leg_records = sa.Table(
    "leg_records",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("leg", sa.String(80), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(80)),  # the first flow or CallInfo that held the user
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("answered_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("cause", sa.String(32)),
    sa.Column("end_reason", sa.String(32)),
    # Who called, where the user is a peer line standing for another tenant's caller.
    sa.Column("caller_number", sa.String(64)),
    sa.Column("caller_name", sa.String(64)),
    sa.Column("caller_tenant", sa.String(64)),
    # The number called, where the user is a peer line calling another tenant's number.
    sa.Column("dialled_number", sa.String(64)),
    sa.Index(None, "run_id", "leg", unique=True),
    sa.Index(None, "user_id", "started_at"),
    sa.Index(None, "started_at"),
)

flow_records = sa.Table(
    "flow_records",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("flow", sa.String(80), nullable=False),  # call#12
    sa.Column("name", sa.String(64), nullable=False),  # call
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("args", sa.JSON, nullable=False),
    sa.Column("started_by", sa.String(64)),  # the principal, for flows started through the API
    sa.Column("users", sa.JSON, nullable=False),  # every user the flow held
    # Who called on those of them that are peer lines: {line: {number, name, tenant}}.
    sa.Column("callers", sa.JSON),
    # The number dialled on those of them that are peer lines calling out: {line: number}.
    sa.Column("dialled", sa.JSON),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("outcome", sa.String(16)),  # completed | failed | cancelled
    sa.Column("error", sa.Text),
    sa.Column("end_reason", sa.String(32)),
    sa.Index(None, "run_id", "flow", unique=True),
    sa.Index(None, "name", "started_at"),
    sa.Index(None, "started_at"),
)

preemptions = sa.Table(
    "preemptions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("victim", sa.String(80), nullable=False),  # the flow or CallInfo that lost the user
    sa.Column("claimer", sa.String(80), nullable=False),  # the preempting flow
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("seconds", sa.Float),  # how long the protocol took, once complete
    sa.Column("superseded_by", sa.String(80)),
    sa.Index(None, "run_id", "victim"),
    sa.Index(None, "run_id", "claimer"),
)

callinfo_records = sa.Table(
    "callinfo_records",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("callinfo", sa.String(80), nullable=False),  # p2p#3, meetingcall#1
    sa.Column("users", sa.JSON, nullable=False),
    sa.Column("callers", sa.JSON),  # as on flow_records
    sa.Column("dialled", sa.JSON),  # as on flow_records
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("meeting", sa.String(80)),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("end_reason", sa.String(32)),
    sa.Index(None, "run_id", "callinfo", unique=True),
)

recordings = sa.Table(
    "recordings",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("user_id", sa.String(64)),  # the recorded user, or
    sa.Column("meeting", sa.String(80)),  # the recorded meeting
    sa.Column("by", sa.String(80)),  # the flow that recorded
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("end_reason", sa.String(32)),
    # Voice logging (docs/service.md, "Voice logging"); empty on a flow's own recordings.
    sa.Column("kind", sa.String(16)),  # call (a leg) | ptt (one talk burst)
    sa.Column("leg", sa.String(80)),  # the recorded leg
    sa.Column("talker", sa.String(64)),  # a talk burst's talker
    sa.Column("ptt_group", sa.String(80)),  # a talk burst's group (or PTT flow)
    sa.Column("reasons", sa.JSON),  # the policy rules that asked for it: position, emergency, …
    sa.Column("status", sa.String(16)),  # recording | ok | failed | expired
    sa.Column("error", sa.Text),  # why it failed
    sa.Column("sha256", sa.String(64)),  # of the file, taken when it was closed
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("seconds", sa.Float),
    sa.Column("expired_at", sa.Float),  # when retention removed the file
    sa.Index(None, "started_at"),
    sa.Index(None, "run_id", "path"),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("principal", sa.String(64)),  # None: an unauthenticated attempt
    sa.Column("role", sa.String(32)),
    sa.Column("action", sa.String(64), nullable=False),  # flow.start, login, token.create, …
    sa.Column("target", sa.String(128)),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok | denied | failed
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("remote", sa.String(64)),
    sa.Index(None, "at"),
    sa.Index(None, "principal", "at"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("password_hash", sa.String(256), nullable=False),  # argon2id
    # sha256 over that hash and the password it was made from: a start sees an unchanged
    # password without an argon2 verify (docs/service.md, "Passwords at start").
    sa.Column("password_check", sa.String(64)),
    sa.Column("active", sa.Boolean, nullable=False),  # False once removed from the config
    sa.Column("updated_at", sa.Float, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # public part of the token
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # session | api
    sa.Column("label", sa.String(128)),
    sa.Column("secret_hash", sa.String(256), nullable=False),  # argon2id of the secret part
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Column("last_used_at", sa.Float),
    sa.Index(None, "user_id"),
)

#: The centre's directory — users, groups, meeting rooms and roles — as provisioned: seeded from
#: the config on first sight of each id, then changed over the API (docs/service.md,
#: Provisioning). ``data`` is the entry as its config table would hold it (a user's password too:
#: SIP digest needs it in clear, as the config file has it); a removed entry keeps its row with
#: ``data`` null and ``removed_at`` set, so the config does not bring it back.
directory = sa.Table(
    "directory",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),  # user | group | room | role
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("data", sa.JSON),
    sa.Column("removed_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(64)),  # None: seeded from the config
)
