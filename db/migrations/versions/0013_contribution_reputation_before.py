"""a contribution records the reputation its round's close read

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: rounds closed before it was recorded have no value, and none can be derived for certain
    # (reinstatement and slashing move a reputation between rounds).
    with op.batch_alter_table("contributions") as batch:
        batch.add_column(sa.Column("reputation_before", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contributions") as batch:
        batch.drop_column("reputation_before")
