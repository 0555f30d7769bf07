"""The API tests' databases (tests/databases.py) are what a fresh migration gives, every time."""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from db.base import Base, utcnow
from db.migrate import alembic_config
from db.models import ModelVersion, Participant, Round
from tests.databases import PG_ADMIN_URL, MigratedDatabases

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def rows_and_head(url: str) -> tuple[dict[str, int], list[str]]:
    """Row count per table (but alembic_version), and the Alembic version rows."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        counts = {
            table: conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()
            for table in sa.inspect(conn).get_table_names()
            if table != "alembic_version"
        }
        versions = list(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
    engine.dispose()
    return counts, versions


def write_a_little(url: str) -> int:
    """A participant, a model and a round referring to each other, as a test leaves them; the round's id."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with Session(engine) as session, session.begin():
        session.add(Participant(address="0x" + uuid.uuid4().hex + "0" * 8, org_name="org"))
        model = ModelVersion(weights_hash="h" * 64, signature="0x", spec={})
        session.add(model)
        session.flush()
        round_ = Round(model_version_id=model.id, deadline=utcnow(), quorum=1, strategy="fedavg")
        session.add(round_)
        session.flush()
        model.produced_by_round_id = round_.id
        round_id = round_.id
    engine.dispose()
    return round_id


def test_sqlite_copies_are_migrated_and_their_own(tmp_path: Path) -> None:
    databases = MigratedDatabases(tmp_path / "templates")
    (tmp_path / "templates").mkdir()
    first = databases.sqlite_url(tmp_path / "a.db")
    write_a_little(first)
    second = databases.sqlite_url(tmp_path / "b.db")
    counts, versions = rows_and_head(second)
    assert versions == [HEAD] and set(counts.values()) == {0}
    assert rows_and_head(first)[0]["rounds"] == 1


def test_a_postgres_schema_comes_back_empty_with_its_sequences_restarted(tmp_path: Path) -> None:
    databases = MigratedDatabases(tmp_path)
    try:
        with databases.postgres_url() as url:
            first_url = url
            counts, versions = rows_and_head(url)
            assert versions == [HEAD] and set(counts.values()) == {0}
            assert write_a_little(url) == 1
            write_a_little(url)
        with databases.postgres_url() as url:
            assert url == first_url  # the same schema, served again
            counts, versions = rows_and_head(url)
            assert versions == [HEAD] and set(counts.values()) == {0}, counts
            assert write_a_little(url) == 1  # as in a new schema
            # Two at once: a second schema, migrated for the purpose.
            with databases.postgres_url() as other:
                assert other != url
                assert rows_and_head(other)[1] == [HEAD]
    finally:
        databases.close()


def test_a_postgres_schema_a_test_changed_is_dropped_not_served_again(tmp_path: Path) -> None:
    databases = MigratedDatabases(tmp_path)
    admin = sa.create_engine(PG_ADMIN_URL)
    try:
        for change in (
            "ALTER TABLE rounds ADD COLUMN extra INTEGER",
            "CREATE INDEX ix_extra ON participants (org_name)",
            "UPDATE alembic_version SET version_num = '0001'",
        ):
            with databases.postgres_url() as url:
                schema = url.rsplit("%3D", 1)[1]
                engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
                with engine.begin() as conn:
                    conn.exec_driver_sql(change)
                engine.dispose()
            with admin.connect() as conn:
                left = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = %(schema)s", {"schema": schema}
                ).scalar_one()
            assert left == 0, f"{change!r}: the schema was kept"
            with databases.postgres_url() as url:
                assert schema not in url
    finally:
        databases.close()
        admin.dispose()
