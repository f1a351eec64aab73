"""The store of schema version 5, and the steps to it from every older SQLite store.

History (before Alembic, SQLite's PRAGMA user_version counted it):
  0: a new, empty file (or a store from before versioning: its checkpoints were pickles)
  2: checkpoints are .npz arrays (never pickles); earlier checkpoints are dropped on migration
  3: scans.resume_attempts counts runs of a scan since its last checkpoint or clean shutdown
  4: scans carry the client's request_id (+ a fingerprint) and a failed scan's status code and
     reason beside its message
  5: scan_shards, the shards of a scan run shard by shard

A store without an `alembic_version` table starts here: a new one gets the tables, an older
SQLite one gets what it lacks (by presence, not by version number: idempotent for every older
layout).

The tables are spelled out here, not imported from `schema.py`: a revision must stay what it
was when later revisions change the schema.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = None
branch_labels = None
depends_on = None


def _text(name: str, default: str | None = None) -> sa.Column[str]:
    server_default = None if default is None else sa.text(f"'{default}'")
    return sa.Column(name, sa.Text, nullable=False, server_default=server_default)


def _int(name: str, default: int | None = None) -> sa.Column[int]:
    server_default = None if default is None else sa.text(str(default))
    return sa.Column(name, sa.Integer, nullable=False, server_default=server_default)


_V4_COLUMNS = (
    lambda: _text("request_id", ""),
    lambda: _text("request_fingerprint", ""),
    lambda: _int("error_code", 0),
    lambda: _text("error_reason", ""),
)


def _create_scans() -> None:
    op.create_table(
        "scans",
        sa.Column("id", sa.Text, primary_key=True),
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
        sa.Column("create_time", sa.Double, nullable=False),
        sa.Column("update_time", sa.Double, nullable=False),
        _text("image_ids"),
        _int("checkpoint_position", 0),
        _int("checkpoint_done", 0),
        _int("checkpoint_failed", 0),
        _int("resume_attempts", 0),
        *(column() for column in _V4_COLUMNS),
    )


def _create_others(have: set[str]) -> None:
    if "checkpoints" not in have:
        op.create_table(
            "checkpoints",
            sa.Column("scan_id", sa.Text, primary_key=True),
            sa.Column("layer", sa.Text, primary_key=True),
            sa.Column("state", sa.LargeBinary, nullable=False),
        )
    if "topk_rows" not in have:
        op.create_table(
            "topk_rows",
            sa.Column("scan_id", sa.Text, primary_key=True),
            sa.Column("layer", sa.Text, primary_key=True),
            sa.Column("channel", sa.Integer, primary_key=True),
            sa.Column("kind", sa.Text, primary_key=True),
            sa.Column("rank", sa.Integer, primary_key=True),
            _text("image"),
            sa.Column("score", sa.Double, nullable=False),
            _int("y"),
            _int("x"),
        )
    if "scan_shards" not in have:
        op.create_table(
            "scan_shards",
            sa.Column("scan_id", sa.Text, primary_key=True),
            sa.Column("shard", sa.Integer, primary_key=True),
            _int("first"),
            _int("stop"),
            _text("state", "pending"),
            _int("attempts", 0),
            _int("images_done", 0),
            _int("images_failed", 0),
            sa.Column("finish_time", sa.Double, nullable=False, server_default=sa.text("0")),
        )
    if "layer_statistics" not in have:
        op.create_table(
            "layer_statistics",
            sa.Column("scan_id", sa.Text, primary_key=True),
            sa.Column("layer", sa.Text, primary_key=True),
            _text("statistics"),
        )


def _legacy_version(bind: sa.Connection) -> int:
    """PRAGMA user_version of an SQLite store from before Alembic (0 elsewhere)."""
    if bind.dialect.name != "sqlite":
        return 0
    return int(bind.exec_driver_sql("PRAGMA user_version").scalar_one())


def upgrade() -> None:
    bind = op.get_bind()
    have = set(sa.inspect(bind).get_table_names())
    legacy = "scans" in have
    if not legacy:
        _create_scans()
    else:
        columns = {c["name"] for c in sa.inspect(bind).get_columns("scans")}
        if "resume_attempts" not in columns:
            op.add_column("scans", _int("resume_attempts", 0))
        for column in _V4_COLUMNS:
            made = column()
            if made.name not in columns:
                op.add_column("scans", made)
    _create_others(have)
    indexes = {i["name"] for i in sa.inspect(bind).get_indexes("scans")}
    if "scans_request_id" not in indexes:
        op.create_index(
            "scans_request_id",
            "scans",
            ["request_id"],
            unique=True,
            sqlite_where=sa.text("request_id != ''"),
            postgresql_where=sa.text("request_id != ''"),
        )
    if legacy and _legacy_version(bind) < 2:
        # Version 0/1 checkpoints are pickles, which are never loaded: unfinished scans
        # restart from their first image (their results stay equal, only slower).
        op.execute("DELETE FROM checkpoints")
        op.execute(
            "UPDATE scans SET checkpoint_position = 0, checkpoint_done = 0,"
            " checkpoint_failed = 0, images_done = 0, images_failed = 0"
            " WHERE state NOT IN ('succeeded', 'failed', 'cancelled')"
        )
