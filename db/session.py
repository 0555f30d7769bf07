"""Engines and sessions from the settings' database URL (SQLite or PostgreSQL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

# Execution option marking sessions that only read (see read_session_factory).
READ_ONLY = "fedledger_read_only"


def make_engine(url: str) -> Engine:
    """A new engine for ``url``; on SQLite with WAL, foreign keys and writers that take the lock up front."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            # WAL lets the API read while a worker writes; foreign keys are off by default in SQLite.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # Let SQLAlchemy, not the driver, open transactions (see _begin_immediate).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            # A deferred SQLite transaction that reads, then writes after another writer committed, fails
            # with SQLITE_BUSY_SNAPSHOT instead of waiting. Taking the write lock up front makes writers
            # queue (busy_timeout) and read-then-write sequences (the audit chain, idempotency checks) safe.
            # Sessions from read_session_factory never write, so they read a WAL snapshot without the lock
            # and do not queue behind (or hold up) the writers.
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """The process's one engine for ``url`` (one pool per database)."""
    return make_engine(url)


def session_factory(url: str) -> sessionmaker[Session]:
    """Sessions for work that writes (on SQLite each transaction takes the write lock at BEGIN)."""
    return sessionmaker(bind=engine_for(url), expire_on_commit=False)


def read_session_factory(url: str) -> sessionmaker[Session]:
    """Sessions for work that only reads: on SQLite they never take the write lock, so request paths can
    do their checks concurrently and hold the lock only for their short write transaction. Same pool."""
    return sessionmaker(bind=engine_for(url).execution_options(**{READ_ONLY: True}), expire_on_commit=False)


def ping(sessions: sessionmaker[Session]) -> None:
    """One round trip to the database (``SELECT 1``); raises what the driver raises when it is down."""
    with sessions() as session:
        session.execute(text("SELECT 1"))


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: commits on success, rolls back on any exception, always closes."""
    session = sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
