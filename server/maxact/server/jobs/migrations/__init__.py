"""Alembic migrations of the store: one set of revisions for SQLite and PostgreSQL."""
