"""Bring a store to the schema this code writes, with Alembic, or refuse a newer one.

The revisions ship inside the package (`migrations/`) and run on every start; replicas that
start together on one PostgreSQL database take turns (an advisory lock), so each revision runs
once.
"""

from __future__ import annotations

import logging
from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect, text

from maxact.server.jobs.schema import HEAD_REVISION, OUR_TABLES, SCHEMA_VERSION

log = logging.getLogger("maxact.server")
# Alembic's own INFO lines ("Context impl ...") say nothing an operator needs on every start
logging.getLogger("alembic").setLevel(logging.WARNING)

# any 64-bit number no other program on the database uses for pg_advisory_lock: "maxact" in hex
_MIGRATION_LOCK = 0x6D6178616374


class StoreError(RuntimeError):
    """The store cannot be used; the message is one line naming it and what to do."""


class StoreVersionError(StoreError):
    """The store was written by a newer maxact."""


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    folder = resources.files("maxact.server.jobs") / "migrations"
    config.set_main_option("script_location", str(folder))
    config.attributes["connection"] = connection
    return config


def _stored_version(connection: Connection, tables: set[str]) -> int:
    """The schema version the store says it has (0: new, or from before versions)."""
    version = 0
    if connection.dialect.name == "sqlite":
        version = int(connection.exec_driver_sql("PRAGMA user_version").scalar_one())
    if "alembic_version" in tables:
        stored = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if stored is not None:
            try:
                version = max(version, int(stored))
            except ValueError:  # not one of ours: name it as it is
                raise StoreVersionError(
                    f"has schema revision {stored!r}, which this maxact does not know"
                ) from None
    return version


def check_and_upgrade(engine: Engine, name: str) -> None:
    """Refuse a store of a newer schema or another program's database (StoreError naming
    `name`); else apply the revisions it lacks."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            connection.commit()
        try:
            _upgrade(connection, name)
        finally:
            if connection.dialect.name == "postgresql":
                connection.rollback()
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK}
                )
                connection.commit()


def _upgrade(connection: Connection, name: str) -> None:
    tables = set(inspect(connection).get_table_names())
    try:
        version = _stored_version(connection, tables)
    except StoreVersionError as exc:
        raise StoreVersionError(f"store {name} {exc}: pass another --store") from None
    connection.rollback()
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"store {name} has schema version {version}; this maxact reads up to"
            f" {SCHEMA_VERSION}: upgrade maxact or start with another --store"
        )
    if tables - {"alembic_version"} and not tables & OUR_TABLES:
        raise StoreError(
            f"store {name} is a database but not a maxact store (its tables: "
            f"{', '.join(sorted(tables))[:200]}): pass another --store"
        )
    if tables and version < SCHEMA_VERSION:
        log.info("store %s: migrating schema version %d to %d", name, version, SCHEMA_VERSION)
    command.upgrade(_alembic_config(connection), HEAD_REVISION)
    if connection.dialect.name == "sqlite":
        # an older maxact reads this number: it refuses the store instead of misreading it
        connection.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
    connection.commit()
