"""rounds remember when a close and a post were requested

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 00:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("close_requested_at", db.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("post_requested_at", db.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("post_requested_at")
        batch.drop_column("close_requested_at")
