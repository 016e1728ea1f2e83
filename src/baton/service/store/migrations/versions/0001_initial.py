"""Initial schema: runs, the journal, call records, recordings, audit, users, tokens.

Revision ID: 0001
Revises:

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("principal", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("remote", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_principal_at"), ["principal", "at"], unique=False
        )

    op.create_table(
        "callinfo_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("callinfo", sa.String(length=80), nullable=False),
        sa.Column("users", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("meeting", sa.String(length=80), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callinfo_records")),
    )
    with op.batch_alter_table("callinfo_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_callinfo_records_run_id_callinfo"), ["run_id", "callinfo"], unique=True
        )

    op.create_table(
        "flow_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("flow", sa.String(length=80), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=True),
        sa.Column("users", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_records")),
    )
    with op.batch_alter_table("flow_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_flow_records_name_started_at"), ["name", "started_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_flow_records_run_id_flow"), ["run_id", "flow"], unique=True
        )
        batch_op.create_index(
            batch_op.f("ix_flow_records_started_at"), ["started_at"], unique=False
        )

    op.create_table(
        "journal",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("flow", sa.String(length=80), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal")),
    )
    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_journal_run_id_flow"), ["run_id", "flow"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_journal_run_id_seq"), ["run_id", "seq"], unique=True)

    op.create_table(
        "leg_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("leg", sa.String(length=80), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=80), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("cause", sa.String(length=32), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leg_records")),
    )
    with op.batch_alter_table("leg_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_leg_records_run_id_leg"), ["run_id", "leg"], unique=True
        )
        batch_op.create_index(batch_op.f("ix_leg_records_started_at"), ["started_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_leg_records_user_id_started_at"), ["user_id", "started_at"], unique=False
        )

    op.create_table(
        "preemptions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("victim", sa.String(length=80), nullable=False),
        sa.Column("claimer", sa.String(length=80), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("superseded_by", sa.String(length=80), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preemptions")),
    )
    with op.batch_alter_table("preemptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_preemptions_run_id_claimer"), ["run_id", "claimer"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_preemptions_run_id_victim"), ["run_id", "victim"], unique=False
        )

    op.create_table(
        "recordings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("meeting", sa.String(length=80), nullable=True),
        sa.Column("by", sa.String(length=80), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
    )
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recordings_started_at"), ["started_at"], unique=False)

    op.create_table(
        "runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("switch", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("secret_hash", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("users")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_user_id"))

    op.drop_table("tokens")
    op.drop_table("runs")
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recordings_started_at"))

    op.drop_table("recordings")
    with op.batch_alter_table("preemptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_preemptions_run_id_victim"))
        batch_op.drop_index(batch_op.f("ix_preemptions_run_id_claimer"))

    op.drop_table("preemptions")
    with op.batch_alter_table("leg_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leg_records_user_id_started_at"))
        batch_op.drop_index(batch_op.f("ix_leg_records_started_at"))
        batch_op.drop_index(batch_op.f("ix_leg_records_run_id_leg"))

    op.drop_table("leg_records")
    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journal_run_id_seq"))
        batch_op.drop_index(batch_op.f("ix_journal_run_id_flow"))

    op.drop_table("journal")
    with op.batch_alter_table("flow_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flow_records_started_at"))
        batch_op.drop_index(batch_op.f("ix_flow_records_run_id_flow"))
        batch_op.drop_index(batch_op.f("ix_flow_records_name_started_at"))

    op.drop_table("flow_records")
    with op.batch_alter_table("callinfo_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callinfo_records_run_id_callinfo"))

    op.drop_table("callinfo_records")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_principal_at"))
        batch_op.drop_index(batch_op.f("ix_audit_at"))

    op.drop_table("audit")
