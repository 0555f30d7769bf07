"""bind each login nonce to the address it was issued for

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 00:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("auth_nonces") as batch:
        batch.add_column(sa.Column("address", sa.String(length=42), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_nonces") as batch:
        batch.drop_column("address")
