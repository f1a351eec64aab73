"""Persisted scans: run in the background, checkpoint, resume after a restart, answer queries.

A scan is a row in the store, shared by every replica on it. A replica claims a scan with a
lease (`leases.LeaseLoop`: queued scans, and scans whose owner died) while it runs fewer than
`max_running`; its worker thread runs the scan over the dataset snapshot taken at creation,
always the same way: as shards (`shard_work`) on an executor, the one worker in this process
(one shard, reported in parts every `checkpoint_images` images and on shutdown) or a Ray
cluster's workers (`shard_images` each). The plan is kept in the store, each reported part is
merged into the checkpoint in the transaction that marks it done, and a restarted server (or
another replica) runs only what is not done yet, so the final result equals an uninterrupted
scan (reducers are exact and order-independent). Every write of a running scan carries its
lease: a replica that lost it (another took the scan over) writes nothing more.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from cachetools import TTLCache

from maxact.common import resources
from maxact.common.kinds import ACTIVE_STATES, ResponsesMode, ScanState, TopKKind, TopKMode
from maxact.common.statistics import LayerStatistics
from maxact.server import limits
from maxact.server.data.datasets import DatasetCatalog, read_labels
from maxact.server.data.preprocess import (
    Preprocessing,
    ResolvedPreprocessing,
)
from maxact.server.errors import (
    Code,
    ServiceError,
    already_exists,
    failed_precondition,
    invalid_argument,
    not_found,
)
from maxact.server.jobs.leases import LeaseLoop, dead_here, replica_name
from maxact.server.jobs.maps_files import MapsFiles
from maxact.server.jobs.responses_files import ResponsesFiles, ResponsesLayout
from maxact.server.jobs.shard_work import (
    LayerStates,
    LocalShardExecutor,
    ShardEvents,
    ShardExecutor,
    ShardResult,
    ShardTask,
    ShardWork,
    reduce_options,
    scan_setup,
    shard_ranges,
)
from maxact.server.jobs.store import (
    MAX_RESUME_ATTEMPTS,
    Lease,
    LeaseLost,
    NewScan,
    RequestIdReused,
    ScanError,
    ScanRecord,
    ShardRow,
    Store,
    TopKRow,
)
from maxact.server.models.registry import LayerEntry, LoadedModel, ModelRegistry, require_field
from maxact.server.ops.metrics import SCAN_IMAGES_PER_SECOND, SCANS_QUEUED, SCANS_RUNNING
from maxact.server.scan.engine import EngineCancelled
from maxact.server.scan.layer import LayerReducer, ReduceOptions
from maxact.server.scan.reducers import check_k
from maxact.server.settings import (
    DEFAULT_CHECKPOINT_IMAGES,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_RESPONSES_MB,
    DEFAULT_SHARD_IMAGES,
    MIB,
)

log = logging.getLogger("maxact.server")

MAX_LAYERS = 16
MAX_REQUEST_ID = 128
# how long DeleteScan waits for a running scan's worker to stop
DELETE_WAIT_SECONDS = 30.0
PROGRESS_SECONDS = 0.5  # how often a running scan's progress is stored


@dataclass(frozen=True)
class _Inputs:
    """A scan's image snapshot, the class id of each image (-1: none) and the class names."""

    ids: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]


@dataclass
class _Totals:
    """Images done/failed in the stored checkpoint, and when progress was last stored."""

    done: int
    failed: int
    written: float = field(default_factory=time.monotonic)


class _Merged:
    """A scan's reducers: its checkpoint and every part reported since, merged (exactly)."""

    def __init__(
        self, layers: list[LayerEntry], options: ReduceOptions, classes: tuple[str, ...]
    ) -> None:
        self._layers = {layer.name: layer for layer in layers}
        self._options, self._classes = options, classes
        self.reducers = {name: self._empty(name) for name in self._layers}

    def _empty(self, name: str) -> LayerReducer:
        layer = self._layers[name]
        return LayerReducer(name, layer.field, layer.shape, self._options, self._classes)

    def add(self, states: LayerStates) -> None:
        for name, state in states.items():
            part = self._empty(name)
            part.load_state_dict(state)
            self.reducers[name].merge(part)

    def states(self) -> dict[str, bytes]:
        return {name: reducer.state() for name, reducer in self.reducers.items()}


def _ranked_rows(
    name: str, reducer: LayerReducer, position: int, kind: TopKKind, ids: list[str]
) -> list[TopKRow]:
    """The ranked rows of the channel at `position` of `reducer`, as the store keeps them."""
    channel = reducer.channels[position]
    return [
        TopKRow(name, channel, kind, rank, ids[e.image], float(e.score), e.y, e.x)
        for rank, e in enumerate(reducer.entries(position, kind), start=1)
    ]


@dataclass(frozen=True)
class Checkpoint:
    """An unfinished scan's answers so far, from its last checkpoint: exactly what the
    finished scan would store for the images it has done."""

    statistics: dict[str, LayerStatistics]
    reducers: dict[str, LayerReducer]
    ids: list[str]

    def rankings(self, layer: str, channel: int, kind: TopKKind) -> list[TopKRow]:
        """The channel's ranking so far ([] for a ranking the scan does not keep)."""
        reducer = self.reducers[layer]
        if kind not in reducer.kinds() or channel not in reducer.channels:
            return []
        return _ranked_rows(layer, reducer, reducer.channels.index(channel), kind, self.ids)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class _Running:
    thread: threading.Thread
    cancel: threading.Event
    lease: Lease
    engine: _Stoppable | None = None  # the scan engine, or the shard executor
    # set once the worker holds a slot; before that it waits and writes nothing
    holds_slot: threading.Event = field(default_factory=threading.Event)

    @property
    def scan_id(self) -> str:
        return self.lease.scan_id


def scan_id_from(name: str) -> str:
    """Accept "scans/{id}" or a bare id."""
    scan_id = resources.scan_id(name)
    if not scan_id or "/" in scan_id:
        raise invalid_argument(
            "INVALID_NAME", f"invalid scan name {name!r}: use {resources.scan_name('ID')}"
        )
    return scan_id


class ScanJobs:
    def __init__(
        self,
        store: Store,
        models: ModelRegistry,
        datasets: DatasetCatalog,
        max_running: int = 1,
        checkpoint_images: int = DEFAULT_CHECKPOINT_IMAGES,
        shard_executor: Callable[[], ShardExecutor] | None = None,
        shard_images: int = DEFAULT_SHARD_IMAGES,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        state_dir: Path | None = None,
        max_responses_bytes: int = DEFAULT_MAX_RESPONSES_MB * MIB,
    ) -> None:
        self.store = store
        # where per-scan files every replica reads go (a folder all replicas mount; their
        # per-image responses): by default beside an SQLite store; a server on PostgreSQL
        # must be given one (maxact serve refuses to start without), others get a private one
        self.state_dir = state_dir or (
            store.path.parent
            if store.path is not None
            else Path(tempfile.mkdtemp(prefix="maxact-state-"))
        )
        self.responses = ResponsesFiles(self.state_dir / "responses")
        self.maps = MapsFiles(self.state_dir / "maps")
        self.max_responses_bytes = max_responses_bytes
        # this replica, as the store's lease rows name it
        self.replica = replica_name(uuid.uuid4().hex[:8])
        self.max_running = max_running
        self.models = models
        self.datasets = datasets
        self.checkpoint_images = checkpoint_images
        # None: scans run in this process; else each scan's shards go to a new executor
        self.shard_executor = shard_executor
        self.shard_images = shard_images
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._labelled: TTLCache[str, _Inputs] = TTLCache(maxsize=4, ttl=60)
        self._closing = threading.Event()
        self._queued = self._active = 0
        # failures the store could not record (e.g. a full disk): reported from memory, so a
        # scan always reaches a final state for its watchers
        self._unrecorded_failures: dict[str, ScanError] = {}
        self._leases = LeaseLoop(
            store,
            self.replica,
            lease_seconds,
            held=lambda: [job.lease for job in self._jobs()],
            free_slots=lambda: 0 if self._closing.is_set() else max_running - len(self._jobs()),
            start=self._start,
            lost=self._lost,
        )

    def _jobs(self) -> list[_Running]:
        with self._lock:
            return list(self._running.values())

    # -- lifecycle -------------------------------------------------------------------------
    def resume_unfinished(self) -> list[str]:
        """Claim what this replica can run now (scans left queued or running by a server that
        stopped, or by a replica that died), then keep claiming and renewing in the
        background; called once when the server starts. The ids claimed now."""
        dead = dead_here(self.store.owners())
        resumed = [lease.scan_id for lease in self._leases.claim_now(dead)]
        self._leases.start()
        if resumed:
            log.info("resuming %d unfinished scan(s): %s", len(resumed), ", ".join(resumed))
        return resumed

    def _runnable(self, scan_id: str, lease: Lease) -> ScanRecord | None:
        """The claimed scan, or None: finished meanwhile, or failed now because it must not
        run (`_refused`)."""
        record = self.get(scan_id)
        if record.finished:
            return None
        refused = self._refused(record)
        if refused is not None:
            self._fail(scan_id, refused, lease)
            return None
        return record

    def _refused(self, record: ScanRecord) -> ScanError | None:
        """Why a claimed scan must fail instead of run: a damaged row, or a crash loop."""
        if record.damage:
            return _damaged(record.damage)
        if record.resume_attempts >= MAX_RESUME_ATTEMPTS:
            return ScanError(
                Code.ABORTED,
                "TOO_MANY_RESTARTS",
                f"the server stopped abnormally {record.resume_attempts} times while this"
                " scan ran, before it reached a checkpoint (e.g. out of memory); it is not"
                " resumed again",
            )
        return None

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop running scans without marking them cancelled and give them back: a restart
        (or another replica) resumes them at once."""
        self._closing.set()
        self._leases.stop()
        running = self._jobs()
        for job in running:
            job.cancel.set()
            if job.engine is not None:
                job.engine.stop()
        for job in running:
            job.thread.join(timeout)
        for job in running:
            with suppress(ServiceError, LeaseLost):
                # stopped cleanly: a restart resumes it, no crash counted
                self.store.clear_resumes(job.scan_id, job.lease)
                self.store.release(job.lease)
        self.store.changes.close()

    # -- requests --------------------------------------------------------------------------
    def create(
        self,
        model_name: str,
        layers: list[str],
        dataset_name: str,
        k: int,
        mode: TopKMode,
        preprocessing: Preprocessing,
        request_id: str = "",
        deadline: float | None = None,
        responses: ResponsesMode = ResponsesMode.AUTO,
    ) -> ScanRecord:
        """Validate everything a scan needs now, so a bad request fails at once, not later.

        `request_id` makes a retry return the scan the first call created; `deadline`
        (time.monotonic()) refuses to commit a scan the caller has stopped waiting for: it
        would run with nobody knowing its id."""
        _check_request(request_id, layers, k)
        model = self.models.get(model_name)
        prep = model.resolve(preprocessing)
        entries = [model.layer(prep.reference_size, layer) for layer in dict.fromkeys(layers)]
        for entry in entries:
            require_field(entry)
        dataset = self.datasets.open(dataset_name)
        limits.check_classes(len(dataset.classes), sum(map(_channel_count, entries)))
        kept = self._keeps_responses(responses, len(dataset.ids), entries)
        scan = NewScan(
            model_name,
            tuple(dict.fromkeys(layers)),
            dataset_name,
            k,
            mode,
            prep.as_request().to_dict(),  # resolved now: a later sidecar edit changes nothing
        )
        record, created = self._commit(scan, list(dataset.ids), kept, request_id, deadline)
        if created:
            self._leases.wake()
        return record

    def _commit(
        self,
        scan: NewScan,
        image_ids: list[str],
        kept: dict[str, int] | None,
        request_id: str,
        deadline: float | None,
    ) -> tuple[ScanRecord, bool]:
        """Insert the scan, its responses manifest written first: a replica may claim the
        scan as soon as its row commits. A retry or a refusal leaves no manifest behind."""
        scan_id = uuid.uuid4().hex[:16]
        if kept:
            self.responses.create(scan_id, len(image_ids), kept)
        try:
            record, created = self.store.create_scan(
                scan_id, scan, image_ids, request_id, before_commit=_deadline_check(deadline)
            )
        except RequestIdReused as reused:
            self.responses.delete(scan_id)
            raise already_exists(
                "REQUEST_ID_REUSED",
                f"request_id {request_id!r} already created scan "
                f"'{resources.scan_name(reused.scan_id)}'"
                " from a different request; use a new request_id",
                request_id=request_id,
                scan=reused.scan_id,
            ) from None
        except BaseException:
            self.responses.delete(scan_id)
            raise
        if not created:  # a retry of an earlier request: that scan has its own files
            self.responses.delete(scan_id)
        return record, created

    def _keeps_responses(
        self, mode: ResponsesMode, images: int, layers: list[LayerEntry]
    ) -> dict[str, int] | None:
        """The channels per layer a new scan keeps per-image responses of (None: none):
        `auto` while images x channels x 4 bytes fits the bound, `on` always (refused over
        the bound), `off` never."""
        if mode is ResponsesMode.OFF:
            return None
        channels = {layer.name: _channel_count(layer) for layer in layers}
        size = images * sum(channels.values()) * 4
        if size <= self.max_responses_bytes:
            return channels
        if mode is ResponsesMode.ON:
            raise ServiceError(
                Code.RESOURCE_EXHAUSTED,
                "RESPONSES_TOO_LARGE",
                f"the per-image responses of this scan would take {size / MIB:.1f} MiB"
                f" (images x channels x 4 bytes), more than the server's bound of"
                f" {self.max_responses_bytes / MIB:.0f} MiB (maxact serve --max-responses-mb);"
                " scan fewer layers or images, or with --responses off",
            )
        return None

    def responses_layout(self, scan_id: str) -> ResponsesLayout | None:
        """What the scan keeps of its per-image responses (None: nothing)."""
        return self.responses.layout(scan_id)

    def get(self, scan_id: str) -> ScanRecord:
        record = self.store.get(scan_id)
        if record is None:
            raise not_found(
                "SCAN_NOT_FOUND", f"scan '{resources.scan_name(scan_id)}' not found", scan=scan_id
            )
        return self.with_unrecorded(record)

    def with_unrecorded(self, record: ScanRecord) -> ScanRecord:
        """`record`, failed if its failure could only be kept in memory."""
        reason = self._unrecorded_failures.get(record.id)
        if reason is not None and not record.finished:
            return replace(record, state=ScanState.FAILED, error=reason)
        if record.damage and not record.finished:
            return replace(record, state=ScanState.FAILED, error=_damaged(record.damage))
        return record

    def cancel(self, scan_id: str) -> ScanRecord:
        record = self.get(scan_id)
        if record.finished:
            return record
        with self._lock:
            job = self._running.get(scan_id)
        if job is not None:
            job.cancel.set()
            if job.engine is not None:
                job.engine.stop()
        self.store.transition(scan_id, ScanState.CANCELLED, ACTIVE_STATES)
        return self.get(scan_id)

    def delete(self, scan_id: str) -> None:
        """Cancel the scan if it is active, wait for a running worker to stop, then remove
        everything stored for it. (Store writes of a worker that outlives its rows are no-ops
        anyway; the wait keeps a deleted scan from using a slot. A queued worker is not waited
        for: it sees the cancel as soon as it gets a slot, before touching anything.)"""
        self.cancel(scan_id)
        with self._lock:
            job = self._running.get(scan_id)
        if job is not None and job.holds_slot.is_set():
            job.thread.join(DELETE_WAIT_SECONDS)
            if job.thread.is_alive():
                raise ServiceError(
                    Code.UNAVAILABLE,
                    "SCAN_STILL_STOPPING",
                    f"scan '{resources.scan_name(scan_id)}' was cancelled but has not stopped "
                    "yet; retry",
                    {"scan": scan_id},
                )
        self.store.delete(scan_id)
        self.responses.delete(scan_id)
        self.maps.delete(scan_id)

    # -- running ---------------------------------------------------------------------------
    def _start(self, lease: Lease) -> None:
        job = _Running(
            threading.Thread(
                target=self._run,
                args=(lease.scan_id,),
                name=f"maxact-scan-job-{lease.scan_id}",
                daemon=True,
            ),
            threading.Event(),
            lease,
        )
        job.holds_slot.set()  # a replica claims only what its slots can run
        with self._lock:
            self._running[lease.scan_id] = job
        job.thread.start()

    def _lost(self, lease: Lease) -> None:
        """The lease is gone (taken over, cancelled or deleted elsewhere): stop the scan here
        without writing anything."""
        with self._lock:
            job = self._running.get(lease.scan_id)
        if job is not None and job.lease == lease:
            log.info("scan %s: no longer this replica's; stopping it", lease.scan_id)
            job.cancel.set()
            if job.engine is not None:
                job.engine.stop()

    def _gauges(self, delta_queued: int, delta_running: int) -> None:
        with self._lock:
            self._queued += delta_queued
            self._active += delta_running
            SCANS_QUEUED.set(self._queued)
            SCANS_RUNNING.set(self._active)

    def _run(self, scan_id: str) -> None:
        job = self._running[scan_id]
        self._gauges(0, +1)
        try:
            if job.cancel.is_set() or self._closing.is_set():
                return
            self._scan(scan_id, job)
        except (EngineCancelled, LeaseLost):
            pass
        except ServiceError as error:
            if error.reason == "STORE_UNAVAILABLE" and not self._closing.is_set():
                # paused, not failed: its lease runs out and a replica (this one, once the
                # store answers) resumes it from its last checkpoint
                log.warning("scan %s paused: %s", scan_id, error.message)
            else:
                self._fail(scan_id, _scan_error(error), job.lease)
        except Exception as exc:
            log.exception("scan %s failed", scan_id)
            self._fail(
                scan_id,
                ScanError(Code.INTERNAL, "SCAN_FAILED", f"{type(exc).__name__}: {exc}"),
                job.lease,
            )
        finally:
            self._gauges(0, -1)
            with self._lock:
                self._running.pop(scan_id, None)
            self._leases.wake()

    def _fail(self, scan_id: str, error: ScanError, lease: Lease | None = None) -> None:
        """Mark the scan failed; when the store cannot take it (full disk), remember it in
        memory so the scan still ends `failed` for everyone watching."""
        if self._closing.is_set():
            return
        try:
            self.store.transition(scan_id, ScanState.FAILED, ACTIVE_STATES, error, lease)
        except LeaseLost:
            pass
        except ServiceError as failure:
            log.warning(
                "scan %s failed (%s); the store cannot record it: %s",
                scan_id,
                error.message,
                failure.message,
            )
            self._unrecorded_failures[scan_id] = error

    def prepare(
        self, record: ScanRecord
    ) -> tuple[LoadedModel, ResolvedPreprocessing, list[LayerEntry]]:
        if record.damage:
            raise failed_precondition("SCAN_DAMAGED", record.damage, scan=record.id)
        return scan_setup(self.models, record.model, record.preprocessing, record.layers)

    def checkpoint_statistics(self, record: ScanRecord) -> dict[str, LayerStatistics]:
        """The statistics of an unfinished scan's images so far, from its last checkpoint
        (exactly what the finished scan would store for those images); {} before the first
        checkpoint. Read-only: the running scan is not touched."""
        found = self.checkpoint(record)
        return {} if found is None else found.statistics

    def checkpoint(self, record: ScanRecord) -> Checkpoint | None:
        """An unfinished scan's statistics and rankings so far; None before its first
        checkpoint. Read-only: the running scan is not touched."""
        if not self.store.checkpoint(record.id):
            return None
        _, _, layers = self.prepare(record)
        inputs = self._inputs(record, layers)
        merged = self._restored(record, layers, inputs.classes)
        statistics = self._statistics(merged.reducers, inputs.labels)
        return Checkpoint(statistics, merged.reducers, inputs.ids)

    def _inputs(self, record: ScanRecord, layers: list[LayerEntry]) -> _Inputs:
        """The snapshot taken at creation (not a new listing: a resumed scan sees the same
        images) and its labels, within the bound on classes."""
        inputs = self.labelled_images(record)
        limits.check_classes(len(inputs.classes), sum(map(_channel_count, layers)))
        return inputs

    def labelled_images(self, record: ScanRecord) -> _Inputs:
        """The scan's image snapshot, each image's class id (-1: none) and the classes; a
        finished scan's are kept a minute (every neuron query asks them for its label: 20k
        images are ~0.3 s to re-read; an edited labels file shows within the minute)."""
        if record.state is not ScanState.SUCCEEDED:
            return self._read_labelled_images(record)
        with self._lock:
            found = self._labelled.get(record.id)
        if found is None:
            found = self._read_labelled_images(record)
            with self._lock:
                self._labelled[record.id] = found
        return found

    def _read_labelled_images(self, record: ScanRecord) -> _Inputs:
        try:
            ids = self.store.image_ids(record.id)
        except ValueError as exc:
            raise failed_precondition("SCAN_DAMAGED", f"damaged store row: {exc}") from None
        # stored ids are not trusted: an unsafe one is skipped where it is read
        # (dataset_sources), and has no label (read_labels)
        label_of = read_labels(self.datasets.root_of(record.dataset), ids)
        classes = tuple(sorted(set(label_of.values())))
        class_ids = {name: i for i, name in enumerate(classes)}
        labels = np.asarray([class_ids.get(label_of.get(i, ""), -1) for i in ids])
        return _Inputs(ids, labels, classes)

    def _restored(
        self, record: ScanRecord, layers: list[LayerEntry], classes: tuple[str, ...]
    ) -> _Merged:
        """The scan's reducers with its checkpoint (the work of its finished shards) loaded;
        a checkpoint that does not fit the scan fails it with the reason."""
        merged = _Merged(layers, reduce_options(record.k, record.mode, layers=layers), classes)
        states = self.store.checkpoint(record.id)
        if not states:
            return merged
        try:
            for name, reducer in merged.reducers.items():
                reducer.load_state(states[name])
        except (KeyError, ValueError) as exc:
            raise failed_precondition(
                "CHECKPOINT_DAMAGED",
                f"the stored checkpoint of scan '{record.name}' cannot be loaded: {exc}",
                scan=record.id,
            ) from None
        return merged

    def _plan(self, record: ScanRecord, total: int, lease: Lease) -> list[ShardRow]:
        """The scan's shards: its plan if a previous run made one, else from its checkpoint
        on, `shard_images` each for a cluster, one shard in this process (the one-worker
        executor checkpoints inside it)."""
        remaining = total - record.checkpoint_position
        size = self.shard_images if self.shard_executor is not None else max(1, remaining)
        return self.store.plan_shards(
            record.id, shard_ranges(record.checkpoint_position, total, size), lease
        )

    def _scan(self, scan_id: str, job: _Running) -> None:
        """Run a scan: its unfinished shards on the executor (Ray's, or the one worker in this
        process), merging each part into the checkpoint as it reports, then store the
        results."""
        record = self._runnable(scan_id, job.lease)
        if record is None:
            return
        _, _, layers = self.prepare(record)
        inputs = self._inputs(record, layers)
        # counted before the checkpoint is loaded and the scan runs, reset at each checkpoint:
        # a scan that takes the server down (a bad checkpoint, out of memory) is not resumed
        # into a crash loop
        self.store.count_run(scan_id, job.lease)
        merged = self._restored(record, layers, inputs.classes)
        shards = self._plan(record, len(inputs.ids), job.lease)
        totals = _Totals(
            record.checkpoint_done + sum(s.images_done for s in shards if s.done),
            record.checkpoint_failed + sum(s.images_failed for s in shards if s.done),
        )
        layout = self.responses.allocated(scan_id)  # None: the scan keeps no responses
        if not self.store.transition(scan_id, ScanState.RUNNING, ACTIVE_STATES, lease=job.lease):
            return  # cancelled while it was being prepared
        self.store.set_progress(scan_id, totals.done, totals.failed, job.lease)
        tasks = [
            ShardTask(
                s.shard,
                s.first,
                inputs.ids[s.first : s.stop],
                inputs.labels[s.first : s.stop].tolist(),
            )
            for s in shards
            if not s.done
        ]
        executor = (
            self.shard_executor()
            if self.shard_executor is not None
            else LocalShardExecutor(self.models, self.datasets, self.checkpoint_images)
        )
        job.engine = executor
        if job.cancel.is_set():
            raise EngineCancelled()
        started = time.monotonic()
        executor.run(
            replace(self._work(record, inputs.classes), responses=layout is not None),
            tasks,
            self._events(job.lease, merged, totals, layout),
            job.cancel,
        )
        if job.cancel.is_set():
            raise EngineCancelled()
        images = sum(len(task.ids) for task in tasks)
        SCAN_IMAGES_PER_SECOND.set(images / max(time.monotonic() - started, 1e-9))
        self._finish(merged, inputs, totals, job.lease)

    def _finish(self, merged: _Merged, inputs: _Inputs, totals: _Totals, lease: Lease) -> None:
        """Store the results of a scan that ran to its end (its kept maps first: the
        results name them once they commit)."""
        self.maps.write(lease.scan_id, merged.reducers)
        self.store.finish(
            lease.scan_id,
            self._rows(merged.reducers, inputs.ids),
            self._statistics(merged.reducers, inputs.labels),
            totals.done,
            totals.failed,
            lease,
        )

    @staticmethod
    def _work(record: ScanRecord, classes: tuple[str, ...]) -> ShardWork:
        return ShardWork(
            record.id,
            record.model,
            list(record.layers),
            record.dataset,
            record.k,
            record.mode.value,
            dict(record.preprocessing),
            list(classes),
        )

    def _events(
        self,
        lease: Lease,
        merged: _Merged,
        totals: _Totals,
        layout: ResponsesLayout | None = None,
    ) -> ShardEvents:
        """Merge each reported part and store it with the merged checkpoint in one
        transaction (its rows of the responses matrix written first); show the progress of
        work not reported yet."""
        scan_id = lease.scan_id

        def finished(result: ShardResult) -> None:
            if layout is not None:
                self.responses.write(scan_id, layout, result.first, result.responses)
            merged.add(result.states)
            totals.done += result.done
            totals.failed += result.failed
            totals.written = time.monotonic()
            self.store.finish_shard(
                scan_id,
                result.shard,
                result.done,
                result.failed,
                merged.states(),
                totals.done,
                totals.failed,
                until=result.stop,
                lease=lease,
            )

        def progress(done: int, failed: int) -> None:
            if time.monotonic() - totals.written > PROGRESS_SECONDS:
                totals.written = time.monotonic()
                self.store.set_progress(scan_id, totals.done + done, totals.failed + failed, lease)

        return ShardEvents(
            lambda shard: self.store.shard_started(scan_id, shard, lease), finished, progress
        )

    @staticmethod
    def _rows(reducers: dict[str, LayerReducer], ids: list[str]) -> list[TopKRow]:
        rows = []
        for name, reducer in reducers.items():
            for kind in reducer.kinds():
                for position in range(len(reducer.channels)):
                    rows += _ranked_rows(name, reducer, position, kind, ids)
        return rows

    @staticmethod
    def _statistics(
        reducers: dict[str, LayerReducer], labels: np.ndarray
    ) -> dict[str, LayerStatistics]:
        return {name: reducer.statistics(labels).document() for name, reducer in reducers.items()}


def _check_request(request_id: str, layers: list[str], k: int) -> None:
    """The bounds of a CreateScan request that need nothing loaded."""
    if len(request_id) > MAX_REQUEST_ID:
        raise invalid_argument(
            "INVALID_REQUEST_ID", f"request_id is longer than {MAX_REQUEST_ID} characters"
        )
    if not layers:
        raise invalid_argument("LAYERS_REQUIRED", "a scan needs at least one layer")
    if len(set(layers)) > MAX_LAYERS:
        raise invalid_argument("TOO_MANY_LAYERS", f"at most {MAX_LAYERS} layers per scan")
    check_k(k)


def _channel_count(layer: LayerEntry) -> int:
    """Channels a layer's statistics keep: what the class statistics grid is sized by."""
    if layer.field is not None and layer.field.spatial:
        return layer.field.channels
    return int(np.prod(layer.shape))


def _deadline_check(deadline: float | None) -> Callable[[], None]:
    """Raises DEADLINE_EXCEEDED once `deadline` (time.monotonic()) has passed."""

    def check() -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise ServiceError(
                Code.DEADLINE_EXCEEDED,
                "DEADLINE_EXCEEDED",
                "the call's deadline passed before the scan was stored; nothing was created",
            )

    return check


def _scan_error(error: ServiceError) -> ScanError:
    return ScanError(error.code, error.reason, error.message)


def _damaged(damage: str) -> ScanError:
    return ScanError(Code.DATA_LOSS, "SCAN_DAMAGED", damage)
