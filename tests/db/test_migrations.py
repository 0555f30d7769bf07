"""Alembic migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from db.base import Base
from db.migrate import downgrade, upgrade
from db.session import make_engine
from fedledger.evidence import Evidence, parse_codes
from tests.databases import scratch_url


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    with scratch_url(request.param, tmp_path, "m") as scratch:
        yield scratch


def test_migrations_match_the_models_and_run_both_ways(url: str) -> None:
    upgrade(url)
    upgrade(url)  # idempotent
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    downgrade(url, "base")
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    engine.dispose()


def _filler(column: sa.Column[Any]) -> Any:
    """A value a required column accepts, for rows of which only the keys matter here."""
    if isinstance(column.type, sa.JSON):
        return {}
    kind = column.type.python_type
    if kind is datetime:
        return datetime(2026, 12, 1, tzinfo=UTC)
    return {int: 1, float: 1.0, bool: False, str: "1"}[kind]


def _row(table: sa.Table, **values: Any) -> dict[str, Any]:
    # Keys too: every required key is 1 (or "1"), so each reference finds the one parent row.
    required = {c.name: _filler(c) for c in table.columns if not c.nullable}
    return {**required, **values}


def _insert_parents(conn: sa.Connection, table: sa.Table, done: set[str]) -> None:
    """One row in each table ``table`` needs a row in (its required references, transitively), parents
    first."""
    for fk in table.foreign_keys:
        parent = fk.column.table
        if not fk.parent.nullable and parent.name not in done:
            done.add(parent.name)
            _insert_parents(conn, parent, done)
            conn.execute(parent.insert().values(_row(parent)))


def test_0009_turns_prefixed_evidence_into_codes_and_back(url: str) -> None:
    upgrade(url, "0008")
    engine = make_engine(url)
    tables = sa.MetaData()
    tables.reflect(engine)
    contributions = tables.tables["contributions"]
    stored = {
        1: ["reference_evidence: cosine -0.412 to the reference", "below_min_reputation: 12 < 20"],
        2: ["rejected: DecryptionFailed: bad tag"],
        3: ["norm_outlier: norm 41.2, at least 10 x the median", "sample_claim_above_cap: 9000"],
        4: [],
    }
    with engine.begin() as conn:
        # One row in each table a contribution references, one participant per contribution.
        _insert_parents(conn, contributions, set())
        for pid in list(stored)[1:]:
            conn.execute(
                tables.tables["participants"]
                .insert()
                .values(_row(tables.tables["participants"], id=pid, address=f"0x{pid:040x}"))
            )
        for pid, evidence in stored.items():
            conn.execute(
                contributions.insert().values(
                    _row(contributions, id=pid, participant_id=pid, evidence=evidence)
                )
            )

    upgrade(url, "0009")
    after = {
        r.participant_id: (r.evidence, r.evidence_detail)
        for r in _contributions(engine, "evidence", "evidence_detail")
    }
    assert after == {
        1: (
            ["direction_outlier", "below_min_reputation"],
            {"direction_outlier": "cosine -0.412 to the reference", "below_min_reputation": "12 < 20"},
        ),
        2: (["rejected_update"], {"rejected_update": "DecryptionFailed: bad tag"}),
        3: (
            ["norm_outlier", "sample_claim_above_cap"],
            {"norm_outlier": "norm 41.2, at least 10 x the median", "sample_claim_above_cap": "9000"},
        ),
        4: ([], {}),
    }
    # Every stored code is one the enum knows, so the worker and the API read every old row.
    assert [parse_codes(codes) for codes, _ in after.values()] == [
        (Evidence.direction_outlier, Evidence.below_min_reputation),
        (Evidence.rejected_update,),
        (Evidence.norm_outlier, Evidence.sample_claim_above_cap),
        (),
    ]

    downgrade(url, "0008")
    assert {r.participant_id: r.evidence for r in _contributions(engine, "evidence")} == stored
    engine.dispose()


def _contributions(engine: sa.Engine, *columns: str) -> list[Any]:
    table = sa.table("contributions", sa.column("participant_id"), *(sa.column(c, sa.JSON) for c in columns))
    with engine.connect() as conn:
        return list(conn.execute(sa.select(*table.c)))


def test_the_migrations_form_one_line_of_history() -> None:
    # Two migrations landed at once can both revise the same parent: upgrade("head") then fails with
    # "multiple heads" only where it runs, and two files can share a number without Alembic minding.
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, script.get_heads()
    revisions = list(script.walk_revisions())
    numbers = [Path(r.path).name.split("_")[0] for r in revisions]
    assert len(set(numbers)) == len(numbers), sorted(numbers)
    assert len(revisions) == len({r.revision for r in revisions})
