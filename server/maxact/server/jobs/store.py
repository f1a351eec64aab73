"""The scan store: SQLite (WAL) holding scans, their checkpoints, top-k rows and statistics.

One connection per thread (sqlite3 objects are not shared across threads); every write is a
short transaction, so a SIGKILL leaves the last committed checkpoint intact.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from maxact.client.kinds import ScanState, TopKKind, TopKMode
from maxact.server.errors import Code, ServiceError

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
    checkpoint_failed INTEGER NOT NULL DEFAULT 0,
    resume_attempts INTEGER NOT NULL DEFAULT 0,
    request_id TEXT NOT NULL DEFAULT '',
    request_fingerprint TEXT NOT NULL DEFAULT '',
    error_code INTEGER NOT NULL DEFAULT 0,
    error_reason TEXT NOT NULL DEFAULT ''
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
CREATE TABLE IF NOT EXISTS scan_shards (
    scan_id TEXT NOT NULL,
    shard INTEGER NOT NULL,
    first INTEGER NOT NULL,
    stop INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    images_done INTEGER NOT NULL DEFAULT 0,
    images_failed INTEGER NOT NULL DEFAULT 0,
    finish_time REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (scan_id, shard)
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
#   3: scans.resume_attempts counts runs of a scan since its last checkpoint or clean
#      shutdown (a scan whose runs died with the server twice is failed, not resumed)
#   4: scans carry the client's request_id (+ a fingerprint of the request) and a failed
#      scan's status code and reason beside its message
#   5: scan_shards, the shards of a scan run shard by shard (Ray): a finished shard's work is
#      folded into the checkpoint in the same transaction that marks it done (the step to 5
#      creates the table; nothing else changes)
SCHEMA_VERSION = 5
MAX_RESUME_ATTEMPTS = 2
_V4_COLUMNS = (
    "request_id TEXT NOT NULL DEFAULT ''",
    "request_fingerprint TEXT NOT NULL DEFAULT ''",
    "error_code INTEGER NOT NULL DEFAULT 0",
    "error_reason TEXT NOT NULL DEFAULT ''",
)
# One scan per request_id (the CreateScan idempotency key); "" is "no key".
_REQUEST_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS scans_request_id ON scans (request_id)"
    " WHERE request_id != ''"
)
OUR_TABLES = frozenset({"scans", "checkpoints", "topk_rows", "layer_statistics", "scan_shards"})


class StoreError(RuntimeError):
    """The store file cannot be used; the message is one line naming it and what to do."""


class StoreVersionError(StoreError):
    """The store file was written by a newer maxact."""


def _write_error(exc: sqlite3.Error) -> ServiceError:
    """A failed store write as the client should see it: full -> RESOURCE_EXHAUSTED, else
    UNAVAILABLE (never INTERNAL: the request was fine, the server's disk is not)."""
    text = str(exc)
    if "full" in text:
        return ServiceError(
            Code.RESOURCE_EXHAUSTED,
            "STORE_FULL",
            "the server's scan store is full (no disk space left, or maxact serve "
            "--store-max-mb reached)",
        )
    return ServiceError(
        Code.UNAVAILABLE,
        "STORE_UNAVAILABLE",
        f"the server's scan store cannot be written ({type(exc).__name__}: {text[:200]})",
    )


class RequestIdReused(Exception):
    """A CreateScan request_id already names a scan created from a different request."""

    def __init__(self, request_id: str, scan_id: str) -> None:
        super().__init__(request_id)
        self.request_id = request_id
        self.scan_id = scan_id


@dataclass(frozen=True)
class ScanError:
    """Why a scan failed: an errors.Code number (gRPC's numbering), an UPPER_SNAKE reason,
    a message."""

    code: int
    reason: str
    message: str


@dataclass(frozen=True)
class NewScan:
    """Everything a scan is created from (what a request_id retry must repeat)."""

    model: str
    layers: tuple[str, ...]
    dataset: str
    k: int
    mode: TopKMode
    preprocessing: dict[str, Any]

    def fingerprint(self) -> str:
        document = json.dumps(
            [
                self.model,
                list(self.layers),
                self.dataset,
                self.k,
                self.mode.value,
                self.preprocessing,
            ],
            sort_keys=True,
        )
        return hashlib.sha256(document.encode()).hexdigest()


@dataclass(frozen=True)
class ScanRecord:
    id: str
    seq: int
    model: str
    layers: tuple[str, ...]
    dataset: str
    k: int
    mode: TopKMode
    preprocessing: dict[str, Any]
    state: ScanState
    images_done: int
    images_failed: int
    images_total: int
    error: ScanError | None
    create_time: float
    update_time: float
    checkpoint_position: int
    checkpoint_done: int
    checkpoint_failed: int
    resume_attempts: int = 0
    request_id: str = ""
    damage: str = ""
    """Why this row could not be read (empty: it parsed); such a scan is failed, not run."""

    @property
    def finished(self) -> bool:
        return self.state.finished


@dataclass(frozen=True)
class ShardRow:
    """Images [first, stop) of a scan's snapshot; `attempts` counts how often it was sent to
    a worker (a finished shard is never sent again)."""

    shard: int
    first: int
    stop: int
    state: str  # pending | done
    attempts: int
    images_done: int
    images_failed: int
    finish_time: float

    @property
    def done(self) -> bool:
        return self.state == "done"


@dataclass(frozen=True)
class TopKRow:
    """One ranked entry of one channel's ranking, as the store keeps it."""

    layer: str
    channel: int
    kind: TopKKind
    rank: int
    image: str
    score: float
    y: int
    x: int


_COLUMNS = (
    "id, seq, model, layers, dataset, k, mode, preprocessing, state, images_done, images_failed,"
    " images_total, error, create_time, update_time, checkpoint_position, checkpoint_done,"
    " checkpoint_failed, resume_attempts, request_id, error_code, error_reason"
)
# a failed scan stored before version 4 kept only its message
_UNKNOWN_CODE = Code.UNKNOWN
_DATA_LOSS = Code.DATA_LOSS


def _record(row: tuple[Any, ...]) -> ScanRecord:
    """A row as a record; a row that does not parse becomes a record carrying its `damage`
    (so one bad row fails that scan, and listing the others still works)."""
    values = list(row)
    damage = []
    try:
        layers = json.loads(values[3])
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ValueError("not a list of names")
        values[3] = tuple(layers)
    except (TypeError, ValueError) as exc:
        values[3] = ()
        damage.append(f"layers: {str(exc)[:100]}")
    try:
        preprocessing = json.loads(values[7])
        if not isinstance(preprocessing, dict):
            raise ValueError("not an object")
        values[7] = preprocessing
    except (TypeError, ValueError) as exc:
        values[7] = {}
        damage.append(f"preprocessing: {str(exc)[:100]}")
    for index in (1, 5, *range(9, 12), *range(15, 19), 20):
        if not isinstance(values[index], int):
            values[index] = 0
            damage.append(f"column {_COLUMNS.split(', ')[index].strip()} is not a number")
    for index in (13, 14):
        if not isinstance(values[index], (int, float)):
            values[index] = 0.0
    for index in (0, 2, 4, 6, 8, 12, 19, 21):
        values[index] = str(values[index])
    try:
        values[6] = TopKMode(values[6])
    except ValueError:
        damage.append(f"mode {values[6][:50]!r} is unknown")
        values[6] = TopKMode.IMAGE
    message, code, reason = values[12], values[20], values[21]
    values[12] = (
        ScanError(code or _UNKNOWN_CODE, reason or "SCAN_FAILED", message)
        if message or code
        else None
    )
    try:
        values[8] = ScanState(values[8])
    except ValueError:  # shown as failed, with the reason, so a watcher's wait ends
        unknown = f"damaged store row: unknown state {values[8][:50]!r}"
        values[8] = ScanState.FAILED
        values[12] = values[12] or ScanError(_DATA_LOSS, "SCAN_DAMAGED", unknown)
    del values[20:22]
    record = ScanRecord(*values)
    if damage:
        return replace(record, damage="damaged store row: " + "; ".join(damage))
    return record


class Store:
    """Thread-safe access to one SQLite file."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    @classmethod
    def open(cls, path: Path, max_bytes: int | None = None) -> Store:
        """The store at `path`, or StoreError: one line naming the file and what to do."""
        try:
            return cls(path, max_bytes)
        except StoreError:
            raise
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "not a database" in text or "malformed" in text:
                raise StoreError(
                    f"store {path} is not a maxact store or is corrupt ({text}): move it away "
                    "(a new empty store is created) or pass another --store"
                ) from None
            if "full" in text:
                raise StoreError(
                    f"store {path}: the disk is full ({text}): free space or pass another --store"
                ) from None
            raise StoreError(
                f"store {path} cannot be opened for writing ({text}): check that its folder is "
                "writable, or pass another --store"
            ) from None
        except OSError as exc:
            raise StoreError(
                f"store {path} cannot be created ({exc.strerror or exc}): check that its folder is "
                "writable, or pass another --store"
            ) from None

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, or refuse a newer one with its version named."""
        db = self._connection()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"store {self.path.name} has schema version {version}; this maxact reads up to"
                f" {SCHEMA_VERSION}: upgrade maxact or start with another --store"
            )
        tables = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if tables and not tables & OUR_TABLES:
            raise StoreError(
                f"store {self.path} is an SQLite file but not a maxact store (its tables: "
                f"{', '.join(sorted(tables))[:200]}): pass another --store"
            )
        had_scans = "scans" in tables
        db.executescript(SCHEMA)  # executescript manages its own transaction (creates scan_shards)
        if had_scans:
            # by presence, not by version number: idempotent for every older layout
            columns = {row[1] for row in db.execute("PRAGMA table_info(scans)")}
            if "resume_attempts" not in columns:
                db.execute(
                    "ALTER TABLE scans ADD COLUMN resume_attempts INTEGER NOT NULL DEFAULT 0"
                )
            for column in _V4_COLUMNS:
                if column.split()[0] not in columns:
                    db.execute(f"ALTER TABLE scans ADD COLUMN {column}")
        db.execute(_REQUEST_INDEX)
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
            if self.max_bytes is not None:  # a full store behaves like a full disk
                (page_size,) = connection.execute("PRAGMA page_size").fetchone()
                pages = max(1, self.max_bytes // page_size)
                connection.execute(f"PRAGMA max_page_count = {pages}")
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a store that cannot be written (full disk, read-only,
        locked) raises a ServiceError (STORE_FULL / STORE_UNAVAILABLE), never INTERNAL."""
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _write_error(exc) from exc
        try:
            yield db
        except BaseException as exc:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _write_error(exc) from exc
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise _write_error(exc) from exc

    def create_scan(
        self,
        scan_id: str,
        scan: NewScan,
        image_ids: list[str],
        request_id: str = "",
        before_commit: Callable[[], None] = lambda: None,
    ) -> tuple[ScanRecord, bool]:
        """(the scan, True) when created now; (the scan created earlier under `request_id`,
        False) for a retry of the same request. Raises RequestIdReused for a different request
        under a used id. `before_commit` runs inside the transaction, last: raising there
        (e.g. the caller's deadline passed) leaves no scan behind."""
        now = time.time()
        fingerprint = scan.fingerprint()
        with self._transaction() as db:
            earlier = None
            if request_id:
                earlier = db.execute(
                    "SELECT id, request_fingerprint FROM scans WHERE request_id = ?",
                    (request_id,),
                ).fetchone()
            if earlier is not None:
                earlier_id, earlier_fingerprint = earlier
                if earlier_fingerprint != fingerprint:
                    raise RequestIdReused(request_id, earlier_id)
                scan_id, created = earlier_id, False
            else:
                (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM scans").fetchone()
                db.execute(
                    "INSERT INTO scans (id, seq, model, layers, dataset, k, mode, preprocessing,"
                    " state, images_total, create_time, update_time, image_ids, request_id,"
                    " request_fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        scan_id,
                        seq,
                        scan.model,
                        json.dumps(list(scan.layers)),
                        scan.dataset,
                        scan.k,
                        scan.mode.value,
                        json.dumps(scan.preprocessing),
                        ScanState.QUEUED.value,
                        len(image_ids),
                        now,
                        now,
                        json.dumps(image_ids),
                        request_id,
                        fingerprint,
                    ),
                )
                before_commit()
                created = True
        record = self.get(scan_id)
        assert record is not None
        return record, created

    def delete(self, scan_id: str) -> bool:
        """Remove the scan and everything stored for it, in one transaction."""
        with self._transaction() as db:
            for table in ("checkpoints", "topk_rows", "layer_statistics", "scan_shards"):
                db.execute(f"DELETE FROM {table} WHERE scan_id = ?", (scan_id,))
            return db.execute("DELETE FROM scans WHERE id = ?", (scan_id,)).rowcount == 1

    def row_counts(self, scan_id: str) -> dict[str, int]:
        """Rows stored for the scan, per table (what DeleteScan must leave at zero)."""
        db = self._connection()
        counts = {"scans": db.execute("SELECT COUNT(*) FROM scans WHERE id = ?", (scan_id,))}
        for table in ("checkpoints", "topk_rows", "layer_statistics", "scan_shards"):
            counts[table] = db.execute(
                f"SELECT COUNT(*) FROM {table} WHERE scan_id = ?", (scan_id,)
            )
        return {table: cursor.fetchone()[0] for table, cursor in counts.items()}

    def get(self, scan_id: str) -> ScanRecord | None:
        row = (
            self._connection()
            .execute(f"SELECT {_COLUMNS} FROM scans WHERE id = ?", (scan_id,))
            .fetchone()
        )
        return None if row is None else _record(row)

    def image_ids(self, scan_id: str) -> list[str]:
        """The dataset snapshot of a scan; ValueError when the stored list does not parse."""
        (text,) = (
            self._connection()
            .execute("SELECT image_ids FROM scans WHERE id = ?", (scan_id,))
            .fetchone()
        )
        ids = json.loads(text)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("the stored image ids are not a list of names")
        return ids

    def count_run(self, scan_id: str) -> None:
        """Record, BEFORE it runs, that the scan starts running (a crash loop ends: a scan
        whose runs died with the server MAX_RESUME_ATTEMPTS times is not resumed again)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE scans SET resume_attempts = resume_attempts + 1 WHERE id = ?", (scan_id,)
            )

    def clear_resumes(self, scan_id: str) -> None:
        """The scan got somewhere (a checkpoint, a clean shutdown): resuming it is safe."""
        with self._transaction() as db:
            db.execute("UPDATE scans SET resume_attempts = 0 WHERE id = ?", (scan_id,))

    def list_scans(self, limit: int, after_seq: int = 0) -> list[ScanRecord]:
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

    def unfinished(self) -> list[ScanRecord]:
        rows = self._connection().execute(
            f"SELECT {_COLUMNS} FROM scans WHERE state IN ('queued', 'running') ORDER BY seq"
        )
        return [_record(row) for row in rows]

    def set_state(self, scan_id: str, state: ScanState) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE scans SET state = ?, error = '', error_code = 0, error_reason = '',"
                " update_time = ? WHERE id = ?",
                (state.value, time.time(), scan_id),
            )

    def transition(
        self,
        scan_id: str,
        state: ScanState,
        allowed_from: frozenset[ScanState],
        error: ScanError | None = None,
    ) -> bool:
        """Set `state` only if the scan is in one of `allowed_from` (atomic): a cancelled scan
        can never be turned back into a running or succeeded one by a racing worker."""
        failure = error or ScanError(0, "", "")
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE scans SET state = ?, error = ?, error_code = ?, error_reason = ?,"
                f" update_time = ? WHERE id = ?"
                f" AND state IN ({','.join('?' * len(allowed_from))})",
                (
                    state.value,
                    failure.message,
                    failure.code,
                    failure.reason,
                    time.time(),
                    scan_id,
                    *sorted(s.value for s in allowed_from),
                ),
            )
            return cursor.rowcount == 1

    def set_progress(self, scan_id: str, done: int, failed: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE scans SET images_done = ?, images_failed = ?, update_time = ? WHERE id = ?",
                (done, failed, time.time(), scan_id),
            )

    def shards(self, scan_id: str) -> builtins.list[ShardRow]:
        rows = self._connection().execute(
            "SELECT shard, first, stop, state, attempts, images_done, images_failed, finish_time"
            " FROM scan_shards WHERE scan_id = ? ORDER BY shard",
            (scan_id,),
        )
        return [ShardRow(*row) for row in rows]

    def plan_shards(
        self, scan_id: str, ranges: builtins.list[tuple[int, int]]
    ) -> builtins.list[ShardRow]:
        """The scan's shards: planned now from `ranges` unless a previous run planned them
        (a resumed scan keeps its shards, so finished ones stay finished)."""
        with self._transaction() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM scan_shards WHERE scan_id = ?", (scan_id,)
            ).fetchone()
            if count == 0:
                db.executemany(
                    "INSERT INTO scan_shards (scan_id, shard, first, stop) VALUES (?, ?, ?, ?)",
                    [(scan_id, i, first, stop) for i, (first, stop) in enumerate(ranges)],
                )
        return self.shards(scan_id)

    def shard_started(self, scan_id: str, shard: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE scan_shards SET attempts = attempts + 1 WHERE scan_id = ? AND shard = ?",
                (scan_id, shard),
            )

    def finish_shard(
        self,
        scan_id: str,
        shard: int,
        shard_done: int,
        shard_failed: int,
        states: dict[str, bytes],
        done: int,
        failed: int,
        until: int | None = None,
    ) -> bool:
        """Mark a shard done and store `states` (the merge of every finished shard and the
        scan's earlier checkpoint) in one transaction; False when it was already done or the
        scan is no longer active (a shard reporting after a cancel is not recorded).

        `until`: only the shard's images before that index are done; they become a new done
        shard, and this one keeps the rest, still pending."""
        with self._transaction() as db:
            found = db.execute("SELECT state FROM scans WHERE id = ?", (scan_id,)).fetchone()
            if found is None or found[0] not in ("queued", "running"):
                return False
            if not _mark_done(db, scan_id, shard, until, shard_done, shard_failed):
                return False
            db.executemany(
                "INSERT OR REPLACE INTO checkpoints (scan_id, layer, state) VALUES (?, ?, ?)",
                [(scan_id, layer, state) for layer, state in states.items()],
            )
            db.execute(
                # a finished shard is a checkpoint: the resume-attempt count starts again
                "UPDATE scans SET images_done = ?, images_failed = ?, update_time = ?,"
                " resume_attempts = 0 WHERE id = ?",
                (done, failed, time.time(), scan_id),
            )
        return True

    def checkpoint(self, scan_id: str) -> dict[str, bytes]:
        rows = self._connection().execute(
            "SELECT layer, state FROM checkpoints WHERE scan_id = ?", (scan_id,)
        )
        return {layer: bytes(state) for layer, state in rows}

    def finish(
        self,
        scan_id: str,
        rows: Iterable[TopKRow],
        statistics: dict[str, dict[str, Any]],
        done: int,
        failed: int,
    ) -> None:
        """Store the results and mark the scan succeeded, in one transaction (unless it was
        cancelled meanwhile: then nothing is written)."""
        with self._transaction() as db:
            found = db.execute("SELECT state FROM scans WHERE id = ?", (scan_id,)).fetchone()
            if found is None or found[0] != ScanState.RUNNING.value:
                return  # cancelled or deleted meanwhile
            db.execute("DELETE FROM topk_rows WHERE scan_id = ?", (scan_id,))
            db.executemany(
                "INSERT INTO topk_rows (scan_id, layer, channel, kind, rank, image, score, y, x)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (scan_id, r.layer, r.channel, r.kind.value, r.rank, r.image, r.score, r.y, r.x)
                    for r in rows
                ),
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
        self, scan_id: str, layer: str, channel: int, kind: TopKKind, k: int
    ) -> list[TopKRow]:
        rows = self._connection().execute(
            "SELECT rank, image, score, y, x FROM topk_rows WHERE scan_id = ? AND layer = ?"
            " AND channel = ? AND kind = ? ORDER BY rank LIMIT ?",
            (scan_id, layer, channel, kind.value, k),
        )
        return [TopKRow(layer, channel, kind, *row) for row in rows]

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


def _mark_done(
    db: sqlite3.Connection, scan_id: str, shard: int, until: int | None, done: int, failed: int
) -> bool:
    """Mark the pending shard done, or (`until` inside it) its images before `until`: a new
    done shard, the pending one keeping the rest. False: no such pending shard or part."""
    row = db.execute(
        "SELECT first, stop FROM scan_shards WHERE scan_id = ? AND shard = ? AND state != 'done'",
        (scan_id, shard),
    ).fetchone()
    if row is None or (until is not None and until <= row[0]):
        return False
    if until is None or until >= row[1]:
        db.execute(
            "UPDATE scan_shards SET state = 'done', images_done = ?, images_failed = ?,"
            " finish_time = ? WHERE scan_id = ? AND shard = ?",
            (done, failed, time.time(), scan_id, shard),
        )
        return True
    db.execute(
        "INSERT INTO scan_shards (scan_id, shard, first, stop, state, attempts, images_done,"
        " images_failed, finish_time) SELECT scan_id,"
        " (SELECT MAX(shard) + 1 FROM scan_shards WHERE scan_id = ?), first, ?, 'done',"
        " attempts, ?, ?, ? FROM scan_shards WHERE scan_id = ? AND shard = ?",
        (scan_id, until, done, failed, time.time(), scan_id, shard),
    )
    db.execute(
        "UPDATE scan_shards SET first = ? WHERE scan_id = ? AND shard = ?", (until, scan_id, shard)
    )
    return True
