"""Records keep the number a peer line called (docs/cluster.md, "Calls between tenants").

Revision ID: 0009
Revises: 0008

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("flow_records", "callinfo_records")


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("leg_records", sa.Column("dialled_number", sa.String(64), nullable=True))
    for table in _TABLES:
        op.add_column(table, sa.Column("dialled", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    for table in reversed(_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("dialled")
    with op.batch_alter_table("leg_records") as batch:
        batch.drop_column("dialled_number")
