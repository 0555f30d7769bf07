"""Alembic environment: the URL always comes from the caller (``db.migrate``), never from a file.

``db`` sits below the core's settings, so it does not read them: ``fedledger db upgrade`` resolves the URL
from the settings and hands it to :func:`db.migrate.upgrade`.
"""

from __future__ import annotations

from alembic import context

from db import models  # noqa: F401  (registers the tables on Base.metadata)
from db.base import Base
from db.session import make_engine

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database URL: run migrations with `fedledger db upgrade` or db.migrate.upgrade(url), "
            "which pass it to Alembic"
        )
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        # Batch mode: SQLite cannot ALTER most constraints in place; Alembic copies the table instead.
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
