"""Leg records name the caller on a peer line (docs/cluster.md, "Calls between tenants").

Revision ID: 0007
Revises: 0006

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("caller_number", "caller_name", "caller_tenant")


def upgrade() -> None:
    """Upgrade schema."""
    for name in _COLUMNS:
        op.add_column("leg_records", sa.Column(name, sa.String(64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("leg_records") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
