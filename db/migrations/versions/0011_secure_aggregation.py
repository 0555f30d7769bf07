"""secure aggregation (issue 24): a secure round's phase and seed, its members, groups and messages

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_PHASES = ("join", "keys", "shares", "masked", "unmask", "closed")
_STEPS = ("keys", "shares", "masked", "unmask")


def upgrade() -> None:
    with op.batch_alter_table("updates") as batch:
        batch.alter_column("key_id", existing_type=sa.String(64), nullable=True)
    op.create_table(
        "secagg_rounds",
        sa.Column("round_id", sa.Integer(), sa.ForeignKey("rounds.id"), primary_key=True),
        sa.Column("group_size", sa.Integer(), nullable=False),
        sa.Column("clip", sa.Float(), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column(
            "phase", sa.Enum(*_PHASES, name="secaggphase", native_enum=False, length=32), nullable=False
        ),
        sa.Column("phase_deadline", db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seed_block", sa.Integer(), nullable=True),
        sa.Column("seed_block_hash", sa.String(66), nullable=True),
        sa.Column("seed", sa.String(66), nullable=True),
        sa.Column("left_out", sa.JSON(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_at", db.base.UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "secagg_members",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("round_id", sa.Integer(), sa.ForeignKey("rounds.id"), nullable=False),
        sa.Column("participant_id", sa.Integer(), sa.ForeignKey("participants.id"), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("signature", sa.String(132), nullable=False),
        sa.Column("group_index", sa.Integer(), nullable=True),
        sa.Column("joined_at", db.base.UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("round_id", "participant_id", name="uq_secagg_members_round_participant"),
    )
    op.create_index("ix_secagg_members_round_id", "secagg_members", ["round_id"])
    op.create_table(
        "secagg_groups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("round_id", sa.Integer(), sa.ForeignKey("rounds.id"), nullable=False),
        sa.Column("group_index", sa.Integer(), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.String(66), nullable=False),
        sa.Column("survivors", sa.JSON(), nullable=True),
        sa.Column("dropped", sa.JSON(), nullable=True),
        sa.Column("mean_hash", sa.String(64), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("round_id", "group_index", name="uq_secagg_groups_round_index"),
    )
    op.create_index("ix_secagg_groups_round_id", "secagg_groups", ["round_id"])
    op.create_table(
        "secagg_messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("round_id", sa.Integer(), sa.ForeignKey("rounds.id"), nullable=False),
        sa.Column("group_index", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(42), nullable=False),
        sa.Column("step", sa.Enum(*_STEPS, name="secaggstep", native_enum=False, length=32), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("blob_hash", sa.String(64), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("received_at", db.base.UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("round_id", "sender", "step", name="uq_secagg_messages_round_sender_step"),
    )
    op.create_index("ix_secagg_messages_round_id", "secagg_messages", ["round_id"])


def downgrade() -> None:
    for table in ("secagg_messages", "secagg_groups", "secagg_members"):
        op.drop_index(f"ix_{table}_round_id", table_name=table)
        op.drop_table(table)
    op.drop_table("secagg_rounds")
    with op.batch_alter_table("updates") as batch:
        batch.alter_column("key_id", existing_type=sa.String(64), nullable=False)
