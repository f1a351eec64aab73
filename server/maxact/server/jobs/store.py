"""The scan store: scans, their checkpoints, top-k rows and statistics, on SQLAlchemy Core
over SQLite (a path, the embedded default) or PostgreSQL (a URL, shared by replicas).

Every write is a short transaction, so a SIGKILL leaves the last committed checkpoint intact.
Checkpoints stay in the database, beside the shard plan they belong to: a finished shard and
the checkpoint that folds it in commit together, and a replica that lost the scan's lease
(`Lease`, fenced by its generation) can write neither.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from maxact.common import resources
from maxact.common.kinds import ScanState, TopKKind, TopKMode
from maxact.common.statistics import LayerStatistics
from maxact.server.errors import Code, ServiceError
from maxact.server.jobs import database
from maxact.server.jobs.changes import CHANNEL, ScanChanges
from maxact.server.jobs.migrate import StoreError, StoreVersionError, check_and_upgrade
from maxact.server.jobs.schema import (
    OUR_TABLES,
    SCAN_TABLES,
    SCHEMA_VERSION,
    checkpoints,
    layer_statistics,
    scan_shards,
    scans,
    topk_rows,
)

__all__ = [
    "MAX_RESUME_ATTEMPTS",
    "OUR_TABLES",
    "SCHEMA_VERSION",
    "Lease",
    "LeaseLost",
    "NewScan",
    "RequestIdReused",
    "ScanError",
    "ScanRecord",
    "ShardRow",
    "Store",
    "StoreError",
    "StoreVersionError",
    "TopKRow",
]

MAX_RESUME_ATTEMPTS = 2
_ACTIVE = ("queued", "running")


def _cause(exc: BaseException) -> str:
    """The database's own words (SQLAlchemy's text adds the statement and a link)."""
    original = getattr(exc, "orig", None)
    return str(original if original is not None else exc).strip().splitlines()[0][:200]


def _write_error(exc: BaseException) -> ServiceError:
    """A failed store write as the client should see it: full -> RESOURCE_EXHAUSTED, else
    UNAVAILABLE (never INTERNAL: the request was fine, the server's store is not)."""
    text = _cause(exc)
    if "full" in text or "No space left" in text:
        return ServiceError(
            Code.RESOURCE_EXHAUSTED,
            "STORE_FULL",
            "the server's scan store is full (no disk space left, or maxact serve "
            "--store-max-mb reached)",
        )
    return ServiceError(
        Code.UNAVAILABLE,
        "STORE_UNAVAILABLE",
        f"the server's scan store cannot be written ({type(exc).__name__}: {text})",
    )


def _read_error(exc: BaseException) -> ServiceError:
    return ServiceError(
        Code.UNAVAILABLE,
        "STORE_UNAVAILABLE",
        f"the server's scan store cannot be read ({type(exc).__name__}: {_cause(exc)})",
    )


@dataclass(frozen=True)
class Lease:
    """A replica's claim on a running scan: writes of the scan carry it, and are refused
    once another replica claimed the scan (its generation moved on)."""

    scan_id: str
    owner: str
    generation: int


class LeaseLost(Exception):
    """The scan is no longer this replica's (claimed by another, deleted): stop, write
    nothing more."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"scan {lease.scan_id}: lease {lease.generation} lost")
        self.lease = lease


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

    @property
    def name(self) -> str:
        """The resource name, `scans/{id}`."""
        return resources.scan_name(self.id)


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


_SELECTED = [scans.c[name.strip()] for name in _COLUMNS.split(",")]


class Store:
    """Thread-safe access to one store (SQLite file or PostgreSQL database)."""

    def __init__(
        self, location: Path | str, max_bytes: int | None = None, password: str | None = None
    ) -> None:
        database.check_location(location)
        self.location = location
        self.name = database.shown(location)
        self.max_bytes = max_bytes
        self.path: Path | None = None
        if database.is_url(location):
            self.engine: Engine = database.postgres_engine(
                database.postgres_url(str(location), password)
            )
        else:
            self.path = Path(location)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = database.sqlite_engine(self.path, max_bytes)
        self.dialect = self.engine.dialect.name
        self.changes = ScanChanges(self.engine.url if self.dialect == "postgresql" else None)
        self.now = database.database_now(self.dialect)
        check_and_upgrade(self.engine, self.name)

    @classmethod
    def open(
        cls, location: Path | str, max_bytes: int | None = None, password: str | None = None
    ) -> Store:
        """The store at `location`, or StoreError: one line naming it and what to do."""
        name = database.shown(location)
        try:
            return cls(location, max_bytes, password)
        except StoreError:
            raise
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        except DBAPIError as exc:
            raise StoreError(_open_failure(name, _cause(exc), database.is_url(location))) from None
        except OSError as exc:
            raise StoreError(
                f"store {name} cannot be created ({exc.strerror or exc}): check that its folder "
                "is writable, or pass another --store"
            ) from None

    def close(self) -> None:
        self.changes.close()
        self.engine.dispose()

    # -- transactions ----------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write transaction; a store that cannot be written (full disk, read-only,
        locked, unreachable) raises a ServiceError (STORE_FULL / STORE_UNAVAILABLE), never
        INTERNAL."""
        try:
            with self.engine.connect() as db:
                db = db.execution_options(write=True)
                with db.begin():
                    yield db
        except SQLAlchemyError as exc:
            raise _write_error(exc) from exc

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as db:
                yield db
        except SQLAlchemyError as exc:
            raise _read_error(exc) from exc

    def _fence(self, db: Connection, lease: Lease | None) -> None:
        """Inside a write of a running scan: LeaseLost unless `lease` is still the scan's
        (the row is locked until the transaction ends, so no claim slips in between)."""
        if lease is None:
            return
        row = db.execute(
            select(scans.c.owner, scans.c.lease_generation)
            .where(scans.c.id == lease.scan_id)
            .with_for_update()
        ).first()
        if row is None or tuple(row) != (lease.owner, lease.generation):
            raise LeaseLost(lease)

    def _changed(self, db: Connection, scan_id: str) -> None:
        """Tell every replica's watchers the scan changed (PostgreSQL NOTIFY, sent when the
        transaction commits; SQLite's watchers poll)."""
        if self.dialect == "postgresql":
            db.execute(select(func.pg_notify(CHANNEL, scan_id)))

    def _upsert(self, db: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
        """Insert `rows`, replacing rows of the same primary key."""
        if not rows:
            return
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = dialect_insert(table)
        keys = [c.name for c in table.primary_key.columns]
        statement = statement.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys},
        )
        db.execute(statement, rows)

    # -- scans -----------------------------------------------------------------------------
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
        (e.g. the caller's deadline passed) leaves no scan behind. Two replicas given the same
        request_id at once create one scan: the unique index refuses the second insert, which
        then finds the first."""
        try:
            return self._create_scan(scan_id, scan, image_ids, request_id, before_commit)
        except ServiceError as error:
            if not request_id or not _is_conflict(error):
                raise
        return self._create_scan(scan_id, scan, image_ids, request_id, before_commit)

    def _create_scan(
        self,
        scan_id: str,
        scan: NewScan,
        image_ids: list[str],
        request_id: str,
        before_commit: Callable[[], None],
    ) -> tuple[ScanRecord, bool]:
        now = time.time()
        fingerprint = scan.fingerprint()
        with self._transaction() as db:
            earlier = None
            if request_id:
                earlier = db.execute(
                    select(scans.c.id, scans.c.request_fingerprint).where(
                        scans.c.request_id == request_id
                    )
                ).first()
            if earlier is not None:
                earlier_id, earlier_fingerprint = earlier
                if earlier_fingerprint != fingerprint:
                    raise RequestIdReused(request_id, earlier_id)
                scan_id, created = earlier_id, False
            else:
                seq = db.execute(select(func.coalesce(func.max(scans.c.seq), 0) + 1)).scalar_one()
                db.execute(
                    insert(scans).values(
                        id=scan_id,
                        seq=seq,
                        model=scan.model,
                        layers=json.dumps(list(scan.layers)),
                        dataset=scan.dataset,
                        k=scan.k,
                        mode=scan.mode.value,
                        preprocessing=json.dumps(scan.preprocessing),
                        state=ScanState.QUEUED.value,
                        images_total=len(image_ids),
                        create_time=now,
                        update_time=now,
                        image_ids=json.dumps(image_ids),
                        request_id=request_id,
                        request_fingerprint=fingerprint,
                    )
                )
                before_commit()
                created = True
        record = self.get(scan_id)
        assert record is not None
        return record, created

    def delete(self, scan_id: str) -> bool:
        """Remove the scan and everything stored for it, in one transaction."""
        with self._transaction() as db:
            # the scan's row first, as every write of a running scan locks it first: a delete
            # and a checkpoint on two replicas wait for each other instead of deadlocking
            db.execute(select(scans.c.id).where(scans.c.id == scan_id).with_for_update())
            for table in SCAN_TABLES:
                db.execute(delete(table).where(table.c.scan_id == scan_id))
            self._changed(db, scan_id)
            return db.execute(delete(scans).where(scans.c.id == scan_id)).rowcount == 1

    def row_counts(self, scan_id: str) -> dict[str, int]:
        """Rows stored for the scan, per table (what DeleteScan must leave at zero)."""
        with self._reading() as db:
            counts = {
                "scans": db.execute(
                    select(func.count()).select_from(scans).where(scans.c.id == scan_id)
                ).scalar_one()
            }
            for table in SCAN_TABLES:
                counts[table.name] = db.execute(
                    select(func.count()).select_from(table).where(table.c.scan_id == scan_id)
                ).scalar_one()
        return counts

    def get(self, scan_id: str) -> ScanRecord | None:
        with self._reading() as db:
            row = db.execute(select(*_SELECTED).where(scans.c.id == scan_id)).first()
        return None if row is None else _record(tuple(row))

    def image_ids(self, scan_id: str) -> list[str]:
        """The dataset snapshot of a scan; ValueError when the stored list does not parse."""
        with self._reading() as db:
            text = db.execute(select(scans.c.image_ids).where(scans.c.id == scan_id)).scalar_one()
        ids = json.loads(text)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("the stored image ids are not a list of names")
        return ids

    def count_run(self, scan_id: str, lease: Lease | None = None) -> None:
        """Record, BEFORE it runs, that the scan starts running (a crash loop ends: a scan
        whose runs died with the server MAX_RESUME_ATTEMPTS times is not resumed again)."""
        with self._transaction() as db:
            self._fence(db, lease)
            db.execute(
                update(scans)
                .where(scans.c.id == scan_id)
                .values(resume_attempts=scans.c.resume_attempts + 1)
            )

    def clear_resumes(self, scan_id: str, lease: Lease | None = None) -> None:
        """The scan got somewhere (a checkpoint, a clean shutdown): resuming it is safe."""
        with self._transaction() as db:
            self._fence(db, lease)
            db.execute(update(scans).where(scans.c.id == scan_id).values(resume_attempts=0))

    def list_scans(self, limit: int, after_seq: int = 0) -> list[ScanRecord]:
        """Newest first; `after_seq` is the page token (seq of the last scan of the previous
        page), so pages stay stable while scans are created."""
        query = select(*_SELECTED).order_by(scans.c.seq.desc()).limit(limit)
        if after_seq > 0:
            query = query.where(scans.c.seq < after_seq)
        with self._reading() as db:
            rows = db.execute(query).all()
        return [_record(tuple(row)) for row in rows]

    def unfinished(self) -> list[ScanRecord]:
        with self._reading() as db:
            rows = db.execute(
                select(*_SELECTED).where(scans.c.state.in_(_ACTIVE)).order_by(scans.c.seq)
            ).all()
        return [_record(tuple(row)) for row in rows]

    def set_state(self, scan_id: str, state: ScanState) -> None:
        with self._transaction() as db:
            db.execute(
                update(scans)
                .where(scans.c.id == scan_id)
                .values(
                    state=state.value,
                    error="",
                    error_code=0,
                    error_reason="",
                    update_time=time.time(),
                )
            )
            self._changed(db, scan_id)

    def transition(
        self,
        scan_id: str,
        state: ScanState,
        allowed_from: frozenset[ScanState],
        error: ScanError | None = None,
        lease: Lease | None = None,
    ) -> bool:
        """Set `state` only if the scan is in one of `allowed_from` (atomic): a cancelled scan
        can never be turned back into a running or succeeded one by a racing worker."""
        failure = error or ScanError(0, "", "")
        with self._transaction() as db:
            self._fence(db, lease)
            cursor = db.execute(
                update(scans)
                .where(
                    scans.c.id == scan_id,
                    scans.c.state.in_(sorted(s.value for s in allowed_from)),
                )
                .values(
                    state=state.value,
                    error=failure.message,
                    error_code=failure.code,
                    error_reason=failure.reason,
                    update_time=time.time(),
                )
            )
            self._changed(db, scan_id)
            return cursor.rowcount == 1

    def set_progress(
        self, scan_id: str, done: int, failed: int, lease: Lease | None = None
    ) -> None:
        with self._transaction() as db:
            self._fence(db, lease)
            db.execute(
                update(scans)
                .where(scans.c.id == scan_id)
                .values(images_done=done, images_failed=failed, update_time=time.time())
            )
            self._changed(db, scan_id)

    # -- leases ----------------------------------------------------------------------------
    def claim(
        self,
        owner: str,
        lease_seconds: float,
        limit: int,
        dead_owners: Collection[str] = (),
    ) -> builtins.list[Lease]:
        """Take up to `limit` scans nobody runs (queued, their owner's lease ran out by the
        database's clock, or their owner is one of `dead_owners`) for `owner`, oldest first,
        in one transaction: two replicas never claim the same scan (PostgreSQL: FOR UPDATE
        SKIP LOCKED; SQLite: one writer). A scan taken over is queued until it runs again."""
        if limit <= 0:
            return []
        claimable = and_(
            scans.c.state.in_(_ACTIVE),
            or_(
                scans.c.owner == "",
                scans.c.lease_expires < self.now,
                scans.c.owner.in_(sorted(dead_owners)),
            ),
        )
        with self._reading() as db:  # most rounds find nothing: no write transaction then
            if db.execute(select(scans.c.id).where(claimable).limit(1)).first() is None:
                return []
        with self._transaction() as db:
            now = db.execute(select(self.now)).scalar_one()
            ids = db.execute(
                select(scans.c.id)
                .where(
                    scans.c.state.in_(_ACTIVE),
                    or_(
                        scans.c.owner == "",
                        scans.c.lease_expires < now,
                        scans.c.owner.in_(sorted(dead_owners)),
                    ),
                )
                .order_by(scans.c.seq)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars()
            leases = []
            for scan_id in list(ids):
                db.execute(
                    update(scans)
                    .where(scans.c.id == scan_id)
                    .values(
                        owner=owner,
                        lease_generation=scans.c.lease_generation + 1,
                        lease_expires=now + lease_seconds,
                        state=ScanState.QUEUED.value,
                    )
                )
                generation = db.execute(
                    select(scans.c.lease_generation).where(scans.c.id == scan_id)
                ).scalar_one()
                self._changed(db, scan_id)
                leases.append(Lease(scan_id, owner, generation))
        return leases

    def owners(self) -> set[str]:
        """The replicas holding leases on active scans (alive or not)."""
        with self._reading() as db:
            rows = db.execute(
                select(scans.c.owner)
                .distinct()
                .where(scans.c.state.in_(_ACTIVE), scans.c.owner != "")
            ).scalars()
            return set(rows)

    def renew(self, leases: Iterable[Lease], lease_seconds: float) -> builtins.list[Lease]:
        """Extend the leases that are still ours and whose scan is still active; the others
        (claimed by another replica, cancelled, deleted, finished) are returned: lost."""
        lost = []
        with self._transaction() as db:
            for lease in leases:
                renewed = db.execute(
                    update(scans)
                    .where(_held(lease), scans.c.state.in_(_ACTIVE))
                    .values(lease_expires=self.now + lease_seconds)
                ).rowcount
                if renewed != 1:
                    lost.append(lease)
        return lost

    def release(self, lease: Lease) -> None:
        """Give the scan back (a clean shutdown): queued again, claimable by any replica at
        once, not after its lease ran out."""
        with self._transaction() as db:
            db.execute(
                update(scans)
                .where(_held(lease), scans.c.state.in_(_ACTIVE))
                .values(owner="", lease_expires=0, state=ScanState.QUEUED.value)
            )
            self._changed(db, lease.scan_id)

    # -- shards and checkpoints ------------------------------------------------------------
    def shards(self, scan_id: str) -> builtins.list[ShardRow]:
        with self._reading() as db:
            rows = db.execute(
                select(
                    scan_shards.c.shard,
                    scan_shards.c.first,
                    scan_shards.c.stop,
                    scan_shards.c.state,
                    scan_shards.c.attempts,
                    scan_shards.c.images_done,
                    scan_shards.c.images_failed,
                    scan_shards.c.finish_time,
                )
                .where(scan_shards.c.scan_id == scan_id)
                .order_by(scan_shards.c.shard)
            ).all()
        return [ShardRow(*row) for row in rows]

    def plan_shards(
        self,
        scan_id: str,
        ranges: builtins.list[tuple[int, int]],
        lease: Lease | None = None,
    ) -> builtins.list[ShardRow]:
        """The scan's shards: planned now from `ranges` unless a previous run planned them
        (a resumed scan keeps its shards, so finished ones stay finished)."""
        with self._transaction() as db:
            self._fence(db, lease)
            count = db.execute(
                select(func.count())
                .select_from(scan_shards)
                .where(scan_shards.c.scan_id == scan_id)
            ).scalar_one()
            if count == 0 and ranges:
                db.execute(
                    insert(scan_shards),
                    [
                        {"scan_id": scan_id, "shard": i, "first": first, "stop": stop}
                        for i, (first, stop) in enumerate(ranges)
                    ],
                )
        return self.shards(scan_id)

    def shard_started(self, scan_id: str, shard: int, lease: Lease | None = None) -> None:
        with self._transaction() as db:
            self._fence(db, lease)
            db.execute(
                update(scan_shards)
                .where(scan_shards.c.scan_id == scan_id, scan_shards.c.shard == shard)
                .values(attempts=scan_shards.c.attempts + 1)
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
        lease: Lease | None = None,
    ) -> bool:
        """Mark a shard done and store `states` (the merge of every finished shard and the
        scan's earlier checkpoint) in one transaction; False when it was already done or the
        scan is no longer active (a shard reporting after a cancel is not recorded).

        `until`: only the shard's images before that index are done; they become a new done
        shard, and this one keeps the rest, still pending."""
        with self._transaction() as db:
            self._fence(db, lease)
            found = db.execute(
                select(scans.c.state).where(scans.c.id == scan_id).with_for_update()
            ).first()
            if found is None or found[0] not in _ACTIVE:
                return False
            if not _mark_done(db, scan_id, shard, until, shard_done, shard_failed):
                return False
            self._upsert(
                db,
                checkpoints,
                [
                    {"scan_id": scan_id, "layer": layer, "state": state}
                    for layer, state in states.items()
                ],
            )
            db.execute(
                # a finished shard is a checkpoint: the resume-attempt count starts again
                update(scans)
                .where(scans.c.id == scan_id)
                .values(
                    images_done=done,
                    images_failed=failed,
                    update_time=time.time(),
                    resume_attempts=0,
                )
            )
            self._changed(db, scan_id)
        return True

    def checkpoint(self, scan_id: str) -> dict[str, bytes]:
        with self._reading() as db:
            rows = db.execute(
                select(checkpoints.c.layer, checkpoints.c.state).where(
                    checkpoints.c.scan_id == scan_id
                )
            ).all()
        return {layer: bytes(state) for layer, state in rows}

    def finish(
        self,
        scan_id: str,
        rows: Iterable[TopKRow],
        statistics: dict[str, LayerStatistics],
        done: int,
        failed: int,
        lease: Lease | None = None,
    ) -> None:
        """Store the results and mark the scan succeeded, in one transaction (unless it was
        cancelled meanwhile: then nothing is written)."""
        with self._transaction() as db:
            self._fence(db, lease)
            found = db.execute(
                select(scans.c.state).where(scans.c.id == scan_id).with_for_update()
            ).first()
            if found is None or found[0] != ScanState.RUNNING.value:
                return  # cancelled or deleted meanwhile
            db.execute(delete(topk_rows).where(topk_rows.c.scan_id == scan_id))
            values = [
                {
                    "scan_id": scan_id,
                    "layer": r.layer,
                    "channel": r.channel,
                    "kind": r.kind.value,
                    "rank": r.rank,
                    "image": r.image,
                    "score": r.score,
                    "y": r.y,
                    "x": r.x,
                }
                for r in rows
            ]
            if values:
                db.execute(insert(topk_rows), values)
            self._upsert(
                db,
                layer_statistics,
                [
                    {"scan_id": scan_id, "layer": layer, "statistics": json.dumps(stats.to_json())}
                    for layer, stats in statistics.items()
                ],
            )
            db.execute(delete(checkpoints).where(checkpoints.c.scan_id == scan_id))
            db.execute(
                update(scans)
                .where(scans.c.id == scan_id)
                .values(
                    state=ScanState.SUCCEEDED.value,
                    images_done=done,
                    images_failed=failed,
                    update_time=time.time(),
                )
            )
            self._changed(db, scan_id)

    def topk_rows(
        self, scan_id: str, layer: str, channel: int, kind: TopKKind, k: int
    ) -> list[TopKRow]:
        with self._reading() as db:
            rows = db.execute(
                select(
                    topk_rows.c.rank,
                    topk_rows.c.image,
                    topk_rows.c.score,
                    topk_rows.c.y,
                    topk_rows.c.x,
                )
                .where(
                    topk_rows.c.scan_id == scan_id,
                    topk_rows.c.layer == layer,
                    topk_rows.c.channel == channel,
                    topk_rows.c.kind == kind.value,
                )
                .order_by(topk_rows.c.rank)
                .limit(k)
            ).all()
        return [TopKRow(layer, channel, kind, *row) for row in rows]

    def statistics(self, scan_id: str, layer: str) -> dict[str, Any] | None:
        with self._reading() as db:
            text = db.execute(
                select(layer_statistics.c.statistics).where(
                    layer_statistics.c.scan_id == scan_id, layer_statistics.c.layer == layer
                )
            ).scalar()
        return None if text is None else json.loads(text)


def _held(lease: Lease) -> ColumnElement[bool]:
    return and_(
        scans.c.id == lease.scan_id,
        scans.c.owner == lease.owner,
        scans.c.lease_generation == lease.generation,
    )


def _is_conflict(error: ServiceError) -> bool:
    """A write refused by a unique index (another replica inserted the same request_id)."""
    cause = error.__cause__
    return isinstance(cause, DBAPIError) and (
        "UNIQUE constraint" in str(cause.orig) or "duplicate key" in str(cause.orig)
    )


def _open_failure(name: str, text: str, remote: bool) -> str:
    """One line for a store that cannot be opened, with what to do."""
    if remote:
        if "password authentication failed" in text or "no password supplied" in text:
            return (
                f"store {name}: the database refused the password ({text}): check the URL, "
                "MAXACT_STORE_PASSWORD or --store-password-file"
            )
        if "does not exist" in text:
            return f"store {name}: {text}: create it (createdb) or pass another --store"
        return (
            f"store {name} cannot be reached ({text}): check that PostgreSQL runs and "
            "accepts connections there, or pass another --store"
        )
    if "not a database" in text or "malformed" in text:
        return (
            f"store {name} is not a maxact store or is corrupt ({text}): move it away "
            "(a new empty store is created) or pass another --store"
        )
    if "full" in text:
        return f"store {name}: the disk is full ({text}): free space or pass another --store"
    return (
        f"store {name} cannot be opened for writing ({text}): check that its folder is "
        "writable, or pass another --store"
    )


def _mark_done(
    db: Connection, scan_id: str, shard: int, until: int | None, done: int, failed: int
) -> bool:
    """Mark the pending shard done, or (`until` inside it) its images before `until`: a new
    done shard, the pending one keeping the rest. False: no such pending shard or part."""
    this = and_(scan_shards.c.scan_id == scan_id, scan_shards.c.shard == shard)
    row = db.execute(
        select(scan_shards.c.first, scan_shards.c.stop, scan_shards.c.attempts).where(
            this, scan_shards.c.state != "done"
        )
    ).first()
    if row is None or (until is not None and until <= row[0]):
        return False
    if until is None or until >= row[1]:
        db.execute(
            update(scan_shards)
            .where(this)
            .values(state="done", images_done=done, images_failed=failed, finish_time=time.time())
        )
        return True
    last = db.execute(
        select(func.max(scan_shards.c.shard)).where(scan_shards.c.scan_id == scan_id)
    ).scalar_one()
    db.execute(
        insert(scan_shards).values(
            scan_id=scan_id,
            shard=last + 1,
            first=row[0],
            stop=until,
            state="done",
            attempts=row[2],
            images_done=done,
            images_failed=failed,
            finish_time=time.time(),
        )
    )
    db.execute(update(scan_shards).where(this).values(first=until))
    return True
