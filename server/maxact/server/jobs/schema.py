"""The store's tables, as SQLAlchemy Core sees them: one schema for SQLite and PostgreSQL.

The migrations (`migrations/versions`) create and change these tables; this module only
describes the latest revision for the queries in `store.py`.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)

# The Alembic revision of the schema this code writes, as a number (revision ids are "0005",
# "0006", ...). Before Alembic, SQLite stores counted the same numbers in PRAGMA user_version
# (history in migrations/versions/0005_v5_schema.py); SQLite stores still carry it, so an
# older maxact refuses a store this one wrote.
SCHEMA_VERSION = 6
HEAD_REVISION = f"{SCHEMA_VERSION:04d}"

metadata = MetaData()


def _text(name: str, default: str | None = None) -> Column[str]:
    server_default = None if default is None else text(f"'{default}'")
    return Column(name, Text, nullable=False, server_default=server_default)


def _int(name: str, default: int | None = None) -> Column[int]:
    server_default = None if default is None else text(str(default))
    return Column(name, Integer, nullable=False, server_default=server_default)


scans = Table(
    "scans",
    metadata,
    Column("id", Text, primary_key=True),
    _int("seq"),
    _text("model"),
    _text("layers"),
    _text("dataset"),
    _int("k"),
    _text("mode"),
    _text("preprocessing"),
    _text("state"),
    _int("images_done", 0),
    _int("images_failed", 0),
    _int("images_total", 0),
    _text("error", ""),
    Column("create_time", Double, nullable=False),
    Column("update_time", Double, nullable=False),
    _text("image_ids"),
    _int("checkpoint_position", 0),
    _int("checkpoint_done", 0),
    _int("checkpoint_failed", 0),
    _int("resume_attempts", 0),
    _text("request_id", ""),
    _text("request_fingerprint", ""),
    _int("error_code", 0),
    _text("error_reason", ""),
    # the lease (revision 6): the replica running the scan, how often the scan was claimed
    # (a replica whose generation is no longer the row's stops writing), and until when (the
    # database's clock, seconds since the epoch) the owner counts as alive
    _text("owner", ""),
    _int("lease_generation", 0),
    Column("lease_expires", Double, nullable=False, server_default=text("0")),
)
# One scan per request_id (the CreateScan idempotency key); "" is "no key".
Index(
    "scans_request_id",
    scans.c.request_id,
    unique=True,
    sqlite_where=scans.c.request_id != "",
    postgresql_where=scans.c.request_id != "",
)
Index("scans_state", scans.c.state)  # what replicas look for claimable scans by

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("scan_id", Text, primary_key=True),
    Column("layer", Text, primary_key=True),
    Column("state", LargeBinary, nullable=False),
)

topk_rows = Table(
    "topk_rows",
    metadata,
    Column("scan_id", Text, primary_key=True),
    Column("layer", Text, primary_key=True),
    Column("channel", Integer, primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("rank", Integer, primary_key=True),
    _text("image"),
    Column("score", Double, nullable=False),
    _int("y"),
    _int("x"),
)

scan_shards = Table(
    "scan_shards",
    metadata,
    Column("scan_id", Text, primary_key=True),
    Column("shard", Integer, primary_key=True),
    _int("first"),
    _int("stop"),
    _text("state", "pending"),
    _int("attempts", 0),
    _int("images_done", 0),
    _int("images_failed", 0),
    Column("finish_time", Double, nullable=False, server_default=text("0")),
)

layer_statistics = Table(
    "layer_statistics",
    metadata,
    Column("scan_id", Text, primary_key=True),
    Column("layer", Text, primary_key=True),
    _text("statistics"),
)

OUR_TABLES = frozenset(metadata.tables)
# the tables holding rows of one scan, beside `scans` itself
SCAN_TABLES = (checkpoints, topk_rows, layer_statistics, scan_shards)
