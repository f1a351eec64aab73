"""Alembic's entry point: upgrade over the connection `maxact.server.jobs.migrate` hands in
(never a URL from a config file: the store decides where it is)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from maxact.server.jobs.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


_run(context.config.attributes["connection"])
