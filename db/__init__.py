"""Persistence: SQLAlchemy 2 models, sessions, Alembic migrations and the hash-chained audit log."""
