"""Recordings carry what voice logging needs: why and what was recorded, a checksum, a status.

Revision ID: 0005
Revises: 0004

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("kind", sa.String(16)),
    ("leg", sa.String(80)),
    ("talker", sa.String(64)),
    ("ptt_group", sa.String(80)),
    ("reasons", sa.JSON()),
    ("status", sa.String(16)),
    ("error", sa.Text()),
    ("sha256", sa.String(64)),
    ("size_bytes", sa.BigInteger()),
    ("seconds", sa.Float()),
    ("expired_at", sa.Float()),
)


def upgrade() -> None:
    """Upgrade schema."""
    for name, type_ in _COLUMNS:
        op.add_column("recordings", sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("recordings") as batch:
        batch.create_index(batch.f("ix_recordings_run_id_path"), ["run_id", "path"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("recordings") as batch:
        batch.drop_index(batch.f("ix_recordings_run_id_path"))
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
