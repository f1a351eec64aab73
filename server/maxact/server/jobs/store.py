"""The scan store: SQLite (WAL) holding scans, their checkpoints, top-k rows and statistics.

One connection per thread (sqlite3 objects are not shared across threads); every write is a
short transaction, so a SIGKILL leaves the last committed checkpoint intact.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    model TEXT NOT NULL,
    layers TEXT NOT NULL,
    dataset TEXT NOT NULL,
    k INTEGER NOT NULL,
    mode TEXT NOT NULL,
    preprocessing TEXT NOT NULL,
    state TEXT NOT NULL,
    images_done INTEGER NOT NULL DEFAULT 0,
    images_failed INTEGER NOT NULL DEFAULT 0,
    images_total INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    create_time REAL NOT NULL,
    update_time REAL NOT NULL,
    image_ids TEXT NOT NULL,
    checkpoint_position INTEGER NOT NULL DEFAULT 0,
    checkpoint_done INTEGER NOT NULL DEFAULT 0,
    checkpoint_failed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS checkpoints (
    scan_id TEXT NOT NULL,
    layer TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (scan_id, layer)
);
CREATE TABLE IF NOT EXISTS topk_rows (
    scan_id TEXT NOT NULL,
    layer TEXT NOT NULL,
    channel INTEGER NOT NULL,
    kind TEXT NOT NULL,
    rank INTEGER NOT NULL,
    image TEXT NOT NULL,
    score REAL NOT NULL,
    y INTEGER NOT NULL,
    x INTEGER NOT NULL,
    PRIMARY KEY (scan_id, layer, channel, kind, rank)
);
CREATE TABLE IF NOT EXISTS layer_statistics (
    scan_id TEXT NOT NULL,
    layer TEXT NOT NULL,
    statistics TEXT NOT NULL,
    PRIMARY KEY (scan_id, layer)
);
"""

# PRAGMA user_version of the schema this code writes. History:
#   0: a new, empty file (or a store from before versioning: its checkpoints were pickles)
#   2: checkpoints are .npz arrays (never pickles); earlier checkpoints are dropped on migration
SCHEMA_VERSION = 2


class StoreVersionError(RuntimeError):
    """The store file was written by a newer maxact (or is not a maxact store)."""


TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class ScanRecord:
    id: str
    seq: int
    model: str
    layers: tuple[str, ...]
    dataset: str
    k: int
    mode: str
    preprocessing: dict[str, Any]
    state: str
    images_done: int
    images_failed: int
    images_total: int
    error: str
    create_time: float
    update_time: float
    checkpoint_position: int
    checkpoint_done: int
    checkpoint_failed: int

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class TopKRow:
    rank: int
    image: str
    score: float
    y: int
    x: int


_COLUMNS = (
    "id, seq, model, layers, dataset, k, mode, preprocessing, state, images_done, images_failed,"
    " images_total, error, create_time, update_time, checkpoint_position, checkpoint_done,"
    " checkpoint_failed"
)


def _record(row: tuple[Any, ...]) -> ScanRecord:
    values = list(row)
    values[3] = tuple(json.loads(values[3]))
    values[7] = json.loads(values[7])
    return ScanRecord(*values)


class Store:
    """Thread-safe access to one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, or refuse a newer one with its version named."""
        db = self._connection()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"store {self.path.name} has schema version {version}; this maxact reads up to"
                f" {SCHEMA_VERSION}: upgrade maxact or start with another --store"
            )
        had_scans = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scans'"
        ).fetchone()
        db.executescript(SCHEMA)  # executescript manages its own transaction
        if version < 2 and had_scans:
            # Version 0/1 checkpoints are pickles, which are never loaded: unfinished scans
            # restart from their first image (their results stay equal, only slower).
            with self._transaction() as tx:
                tx.execute("DELETE FROM checkpoints")
                tx.execute(
                    "UPDATE scans SET checkpoint_position = 0, checkpoint_done = 0,"
                    " checkpoint_failed = 0, images_done = 0, images_failed = 0"
                    " WHERE state NOT IN ('succeeded', 'failed', 'cancelled')"
                )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def create_scan(
        self,
        scan_id: str,
        model: str,
        layers: list[str],
        dataset: str,
        k: int,
        mode: str,
        preprocessing: dict[str, Any],
        image_ids: list[str],
    ) -> ScanRecord:
        now = time.time()
        with self._transaction() as db:
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM scans").fetchone()
            db.execute(
                "INSERT INTO scans (id, seq, model, layers, dataset, k, mode, preprocessing, state,"
                " images_total, create_time, update_time, image_ids)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                (
                    scan_id,
                    seq,
                    model,
                    json.dumps(layers),
                    dataset,
                    k,
                    mode,
                    json.dumps(preprocessing),
                    len(image_ids),
                    now,
                    now,
                    json.dumps(image_ids),
                ),
            )
        record = self.get(scan_id)
        assert record is not None
        return record

    def get(self, scan_id: str) -> ScanRecord | None:
        row = (
            self._connection()
            .execute(f"SELECT {_COLUMNS} FROM scans WHERE id = ?", (scan_id,))
            .fetchone()
        )
        return None if row is None else _record(row)

    def image_ids(self, scan_id: str) -> list[str]:
        (text,) = (
            self._connection()
            .execute("SELECT image_ids FROM scans WHERE id = ?", (scan_id,))
            .fetchone()
        )
        return list(json.loads(text))

    def list(self, limit: int, after_seq: int = 0) -> list[ScanRecord]:
        """Newest first; `after_seq` is the page token (seq of the last scan of the previous
        page), so pages stay stable while scans are created."""
        if after_seq > 0:
            rows = self._connection().execute(
                f"SELECT {_COLUMNS} FROM scans WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (after_seq, limit),
            )
        else:
            rows = self._connection().execute(
                f"SELECT {_COLUMNS} FROM scans ORDER BY seq DESC LIMIT ?", (limit,)
            )
        return [_record(row) for row in rows]

    def unfinished(self) -> builtins.list[ScanRecord]:  # `list` is a method here
        rows = self._connection().execute(
            f"SELECT {_COLUMNS} FROM scans WHERE state IN ('queued', 'running') ORDER BY seq"
        )
        return [_record(row) for row in rows]

    def set_state(self, scan_id: str, state: str, error: str = "") -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE scans SET state = ?, error = ?, update_time = ? WHERE id = ?",
                (state, error, time.time(), scan_id),
            )

    def transition(
        self, scan_id: str, state: str, allowed_from: frozenset[str], error: str = ""
    ) -> bool:
        """Set `state` only if the scan is in one of `allowed_from` (atomic): a cancelled scan
        can never be turned back into a running or succeeded one by a racing worker."""
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE scans SET state = ?, error = ?, update_time = ? WHERE id = ?"
                f" AND state IN ({','.join('?' * len(allowed_from))})",
                (state, error, time.time(), scan_id, *sorted(allowed_from)),
            )
            return cursor.rowcount == 1

    def set_progress(self, scan_id: str, done: int, failed: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE scans SET images_done = ?, images_failed = ?, update_time = ? WHERE id = ?",
                (done, failed, time.time(), scan_id),
            )

    def save_checkpoint(
        self, scan_id: str, position: int, done: int, failed: int, states: dict[str, bytes]
    ) -> None:
        """Reducer states after every image before `position` was accounted for, atomically."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO checkpoints (scan_id, layer, state) VALUES (?, ?, ?)",
                [(scan_id, layer, state) for layer, state in states.items()],
            )
            db.execute(
                "UPDATE scans SET checkpoint_position = ?, checkpoint_done = ?,"
                " checkpoint_failed = ?, images_done = ?, images_failed = ?, update_time = ?"
                " WHERE id = ?",
                (position, done, failed, done, failed, time.time(), scan_id),
            )

    def checkpoint(self, scan_id: str) -> dict[str, bytes]:
        rows = self._connection().execute(
            "SELECT layer, state FROM checkpoints WHERE scan_id = ?", (scan_id,)
        )
        return {layer: bytes(state) for layer, state in rows}

    def finish(
        self,
        scan_id: str,
        rows: Iterable[tuple[str, int, str, int, str, float, int, int]],
        statistics: dict[str, dict[str, Any]],
        done: int,
        failed: int,
    ) -> None:
        """Store the results and mark the scan succeeded, in one transaction (unless it was
        cancelled meanwhile: then nothing is written)."""
        with self._transaction() as db:
            (state,) = db.execute("SELECT state FROM scans WHERE id = ?", (scan_id,)).fetchone()
            if state != "running":
                return
            db.execute("DELETE FROM topk_rows WHERE scan_id = ?", (scan_id,))
            db.executemany(
                "INSERT INTO topk_rows (scan_id, layer, channel, kind, rank, image, score, y, x)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((scan_id, *row) for row in rows),
            )
            db.executemany(
                "INSERT OR REPLACE INTO layer_statistics (scan_id, layer, statistics)"
                " VALUES (?, ?, ?)",
                [(scan_id, layer, json.dumps(stats)) for layer, stats in statistics.items()],
            )
            db.execute("DELETE FROM checkpoints WHERE scan_id = ?", (scan_id,))
            db.execute(
                "UPDATE scans SET state = 'succeeded', images_done = ?, images_failed = ?,"
                " update_time = ? WHERE id = ?",
                (done, failed, time.time(), scan_id),
            )

    def topk_rows(
        self, scan_id: str, layer: str, channel: int, kind: str, k: int
    ) -> builtins.list[TopKRow]:
        rows = self._connection().execute(
            "SELECT rank, image, score, y, x FROM topk_rows WHERE scan_id = ? AND layer = ?"
            " AND channel = ? AND kind = ? ORDER BY rank LIMIT ?",
            (scan_id, layer, channel, kind, k),
        )
        return [TopKRow(*row) for row in rows]

    def statistics(self, scan_id: str, layer: str) -> dict[str, Any] | None:
        row = (
            self._connection()
            .execute(
                "SELECT statistics FROM layer_statistics WHERE scan_id = ? AND layer = ?",
                (scan_id, layer),
            )
            .fetchone()
        )
        return None if row is None else json.loads(row[0])
