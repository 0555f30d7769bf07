"""deployment binding: the chain deployment a database belongs to

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_binding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("ledger_address", sa.String(length=42), nullable=False),
        sa.Column("deploy_block", sa.Integer(), nullable=False),
        sa.Column("bound_at", db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_binding")),
    )


def downgrade() -> None:
    op.drop_table("deployment_binding")
