"""a secure round that failed after unmasking under DP records what its released sums cost

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 06:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("secagg_rounds") as batch:
        batch.add_column(sa.Column("epsilon_spent", sa.Float(), nullable=True))
        batch.add_column(sa.Column("dp_noise_std", sa.Float(), nullable=True))
        batch.add_column(sa.Column("dp_charge", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("secagg_rounds") as batch:
        batch.drop_column("dp_charge")
        batch.drop_column("dp_noise_std")
        batch.drop_column("epsilon_spent")
