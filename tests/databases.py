"""Fresh, migrated databases for the tests that start the API, without a migration per test.

Every API test gets an empty database of its own, migrated to head, and Alembic took 0.1-0.4 s to build each
one: hundreds of tests, all in the one xdist worker that runs the shared services. Here:

- SQLite: the migrations run once per session (per worker) into a template file; each test gets a copy of
  the file, byte for byte.
- PostgreSQL: a schema migrated by Alembic serves one test at a time; afterwards it is emptied (every row
  deleted, every sequence restarted: what a freshly migrated schema holds) and serves the next test. Its
  DDL costs most of a migration on PostgreSQL (10-40 ms per CREATE TABLE) and TRUNCATE as much again
  (new files per table and index); DELETE on a few rows takes milliseconds. A schema whose tables,
  columns, constraints or Alembic version a test changed is dropped instead, never handed out again.

The API still runs the migrations at its start (a no-op on a migrated database, as in production after
`fedledger db upgrade`); tests/db/test_migrations.py runs Alembic on empty databases.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.base import Base, utcnow
from db.migrate import upgrade
from db.models import ModelVersion, Participant, Round, RoundStatus
from db.session import engine_for, make_engine

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# A schema's shape: its relations with their columns and defaults, its constraints and indexes, and its Alembic
# version (the second column tells the kinds of rows apart).
SHAPE = """
SELECT c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull::text,
       pg_get_expr(d.adbin, d.adrelid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = %(schema)s
UNION ALL
SELECT con.conname, 'constraint', pg_get_constraintdef(con.oid), NULL, NULL, NULL
FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
WHERE n.nspname = %(schema)s
UNION ALL
SELECT indexname, 'index', indexdef, NULL, NULL, NULL FROM pg_indexes WHERE schemaname = %(schema)s
UNION ALL
SELECT version_num, 'alembic_version', NULL, NULL, NULL, NULL FROM {schema}.alembic_version
ORDER BY 1, 2, 3
"""


def schema_url(schema: str) -> str:
    """URL of the test database with ``schema`` first on the search path (where unqualified names go)."""
    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"


@contextmanager
def empty_schema(prefix: str) -> Iterator[str]:
    """URL of a new, empty PostgreSQL schema (for tests that build their own tables or run Alembic
    themselves), dropped with everything in it afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        yield schema_url(schema)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.dispose()


@contextmanager
def scratch_url(backend: str, tmp_path: Path, prefix: str) -> Iterator[str]:
    """URL of an empty database for a test that builds its own tables or runs Alembic itself: a new SQLite
    file in ``tmp_path`` (``backend`` "sqlite") or a new PostgreSQL schema (:func:`empty_schema`)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / f'{prefix}.db'}"
        return
    with empty_schema(prefix) as url:
        yield url


@contextmanager
def seeded_sessions(url: str, width: int, participants: int = 0) -> Iterator[sessionmaker[Session]]:
    """Sessions on ``url`` with the ORM's tables (no Alembic), model version 1 (one tensor ``w`` of
    ``width``) and participants 1 to ``participants`` (address 0x00..0k, "org k"); the engine is disposed
    afterwards. For the tests of one domain service that need rows to point at, not the API."""
    engine = make_engine(url)
    try:
        Base.metadata.create_all(engine)
        factory = sessionmaker(bind=engine, expire_on_commit=False)
        with factory.begin() as session:
            session.add(ModelVersion(id=1, weights_hash="0" * 64, signature="0x", spec={"w": [width]}))
            for k in range(1, participants + 1):
                session.add(Participant(id=k, address=f"0x{k:040x}", org_name=f"org {k}"))
        yield factory
    finally:
        engine.dispose()


def aggregated_round(session: Session) -> Round:
    """A new aggregated round of model version 1 under the default rule (opened an hour ago, due now,
    quorum 1), flushed: its id is set. For the close's readers of past rounds (seeded_sessions' rows)."""
    round_ = Round(
        status=RoundStatus.aggregated,
        model_version_id=1,
        opened_at=utcnow() - timedelta(hours=1),
        deadline=utcnow(),
        quorum=1,
        strategy="fltrust_guarded",
    )
    session.add(round_)
    session.flush()
    return round_


class MigratedDatabases:
    """The session's migrated SQLite template and PostgreSQL schemas (made on first use), handed to tests."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._sqlite_template: Path | None = None
        self._shapes: dict[str, list[tuple[str | None, ...]]] = {}  # every schema made, as migrated
        self._idle: list[str] = []  # migrated, empty, no test using it
        self._admin: Engine | None = None

    @property
    def admin(self) -> Engine:
        if self._admin is None:
            self._admin = sa.create_engine(PG_ADMIN_URL)
        return self._admin

    def sqlite_url(self, path: Path) -> str:
        """A migrated SQLite database at ``path``."""
        if self._sqlite_template is None:
            template = self.workdir / "template.db"
            upgrade(f"sqlite:///{template}")
            # Alembic's engine is disposed, so SQLite checkpointed its WAL into the file: the file alone is
            # the whole database (a copy beside a pending WAL would lose the last migrations).
            leftovers = [p.name for p in self.workdir.glob("template.db-*")]
            assert not leftovers, f"the template still has {leftovers}: copying the file would lose them"
            self._sqlite_template = template
        shutil.copyfile(self._sqlite_template, path)
        return f"sqlite:///{path}"

    @contextmanager
    def postgres_url(self) -> Iterator[str]:
        """A migrated, empty schema that no one else uses until the block ends."""
        schema = self._idle.pop() if self._idle else self._migrate_new()
        url = schema_url(schema)
        try:
            yield url
        finally:
            # The engine is cached per URL for the process: close its pooled connections now, or they hold
            # connection slots of the shared server (and locks the emptying below would wait for).
            engine_for(url).dispose()
            if self._empty(schema):
                self._idle.append(schema)
            else:
                self._drop(schema)

    def _migrate_new(self) -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with self.admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        self._shapes[schema] = []  # dropped at close() even if the migration fails
        upgrade(schema_url(schema))
        with self.admin.connect() as conn:
            self._shapes[schema] = shape(conn, schema)
        return schema

    def _empty(self, schema: str) -> bool:
        """Bring ``schema`` back to what its migration left (False, untouched, if its shape changed)."""
        with self.admin.begin() as conn:
            if shape(conn, schema) != self._shapes[schema]:
                return False
            # Deleting every row leaves each foreign key satisfied; without the triggers that check them
            # (superuser only, as the tests' postgres role is) no order is needed, and rounds and
            # model_versions refer to each other.
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            relations = conn.exec_driver_sql(
                "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'S') AND c.relname <> 'alembic_version'",
                {"schema": schema},
            ).all()
            for name, kind in relations:
                if kind == "r":
                    conn.exec_driver_sql(f'DELETE FROM {schema}."{name}"')
                else:
                    conn.exec_driver_sql(f'ALTER SEQUENCE {schema}."{name}" RESTART')
        return True

    def _drop(self, schema: str) -> None:
        with self.admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        del self._shapes[schema]

    def close(self) -> None:
        for schema in list(self._shapes):
            self._drop(schema)
        if self._admin is not None:
            self._admin.dispose()


def shape(conn: sa.Connection, schema: str) -> list[tuple[str | None, ...]]:
    """What ``schema`` is made of (relations, columns, defaults, constraints) and its Alembic version."""
    rows = conn.exec_driver_sql(SHAPE.format(schema=schema), {"schema": schema}).all()
    return [tuple(row) for row in rows]
