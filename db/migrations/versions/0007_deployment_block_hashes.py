"""the deployment binding remembers the chain's genesis and deploy-block hashes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployment_binding") as batch:
        batch.add_column(sa.Column("genesis_hash", sa.String(66), nullable=True))
        batch.add_column(sa.Column("deploy_block_hash", sa.String(66), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployment_binding") as batch:
        batch.drop_column("deploy_block_hash")
        batch.drop_column("genesis_hash")
