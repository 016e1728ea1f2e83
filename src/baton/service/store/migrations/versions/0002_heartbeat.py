"""Runs keep a heartbeat and the switch's calls, so a crash is dated and its calls ended.

Revision ID: 0002
Revises: 0001

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("runs", sa.Column("heartbeat_at", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("dialogs", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("dialogs")
        batch.drop_column("heartbeat_at")
