"""store each contribution's evidence as codes, with what was measured in a column of its own

The evidence column held prefixed strings (``"norm_outlier: norm 41.2, ..."``) that the worker parsed back
with ``split(":")``. It now holds the codes of ``fedledger.evidence.Evidence`` and ``evidence_detail`` maps
each code to its detail. Two prefixes were renamed on the way (``reference_evidence`` and ``rejected``);
the mapping is spelled out here because a migration must not change when the enum does.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 22:10:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Prefix as written before this revision -> code after it.
CODE_OF_PREFIX = {
    "reference_evidence": "direction_outlier",
    "norm_outlier": "norm_outlier",
    "rejected": "rejected_update",
    "below_min_reputation": "below_min_reputation",
    "sample_claim_above_cap": "sample_claim_above_cap",
}
PREFIX_OF_CODE = {code: prefix for prefix, code in CODE_OF_PREFIX.items()}

contributions = sa.table(
    "contributions",
    sa.column("id", sa.Integer),
    sa.column("evidence", sa.JSON),
    sa.column("evidence_detail", sa.JSON),
)


def to_codes(entries: list[str]) -> tuple[list[str], dict[str, str]]:
    """Prefixed strings -> (codes, detail by code); an unknown prefix stops the migration."""
    codes: list[str] = []
    details: dict[str, str] = {}
    for entry in entries:
        prefix, _, detail = entry.partition(":")
        code = CODE_OF_PREFIX.get(prefix.strip())
        if code is None:
            raise ValueError(f"evidence {entry!r} has no known kind ({', '.join(CODE_OF_PREFIX)})")
        if code not in codes:
            codes.append(code)
        if detail.strip():
            details[code] = "; ".join(filter(None, (details.get(code), detail.strip())))
    return codes, details


def to_prefixed(codes: list[str], details: dict[str, str]) -> list[str]:
    """(codes, detail by code) -> the prefixed strings the previous revision stored."""
    out = []
    for code in codes:
        prefix = PREFIX_OF_CODE.get(code, code)  # a kind added later kept its code as its prefix
        detail = details.get(code)
        out.append(f"{prefix}: {detail}" if detail else prefix)
    return out


def _rows(conn: Any) -> list[Any]:
    query = sa.select(contributions.c.id, contributions.c.evidence, contributions.c.evidence_detail)
    return list(conn.execute(query))


def upgrade() -> None:
    with op.batch_alter_table("contributions") as batch:
        batch.add_column(sa.Column("evidence_detail", sa.JSON(), nullable=True))
    conn = op.get_bind()
    for row in _rows(conn):
        codes, details = to_codes(row.evidence or [])
        conn.execute(
            contributions.update()
            .where(contributions.c.id == row.id)
            .values(evidence=codes, evidence_detail=details)
        )


def downgrade() -> None:
    conn = op.get_bind()
    for row in _rows(conn):
        prefixed = to_prefixed(row.evidence or [], row.evidence_detail or {})
        conn.execute(contributions.update().where(contributions.c.id == row.id).values(evidence=prefixed))
    with op.batch_alter_table("contributions") as batch:
        batch.drop_column("evidence_detail")
