"""rounds may name the organizations invited (a cohort): only they submit, all of them close it early

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("cohort", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("cohort_size", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("cohort_size")
        batch.drop_column("cohort")
