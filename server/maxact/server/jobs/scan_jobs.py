"""Persisted scans: run in the background, checkpoint, resume after a restart, answer queries.

A scan is a row in the store. Worker threads (at most `max_running` at once; the rest wait
queued) run the scan engine over the dataset snapshot taken at creation, and every
`checkpoint_images` images write the reducers' state together with the position in the
dataset. A restarted server resumes unfinished scans from their last checkpoint, so the final
result equals an uninterrupted scan (reducers are exact and order-independent).

Given a shard executor (a Ray cluster), a scan runs as shards instead (`shard_work`): the plan
is kept in the store, each finished shard is merged into the checkpoint in the transaction
that marks it done, and a resumed scan runs only the shards not yet done.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Protocol

import grpc
import numpy as np

from maxact.common import resources
from maxact.common.kinds import ACTIVE_STATES, ScanState, TopKMode
from maxact.common.statistics import LayerStatistics
from maxact.server.data.datasets import DatasetCatalog, dataset_sources, read_labels
from maxact.server.data.preprocess import (
    Preprocessing,
    ResolvedPreprocessing,
)
from maxact.server.errors import (
    ServiceError,
    already_exists,
    failed_precondition,
    invalid_argument,
    not_found,
)
from maxact.server.jobs.shard_work import (
    LocalShardExecutor,
    ShardExecutor,
    ShardResult,
    ShardTask,
    ShardWork,
    scan_setup,
    shard_ranges,
)
from maxact.server.jobs.store import (
    MAX_RESUME_ATTEMPTS,
    Checkpoint,
    NewScan,
    RequestIdReused,
    ScanError,
    ScanRecord,
    Store,
    TopKRow,
)
from maxact.server.models.registry import LayerEntry, LoadedModel, ModelRegistry, require_field
from maxact.server.ops.metrics import SCAN_IMAGES_PER_SECOND, SCANS_QUEUED, SCANS_RUNNING
from maxact.server.paths import check_name
from maxact.server.scan.engine import EngineCallbacks, EngineCancelled, ScanEngine
from maxact.server.scan.layer import LayerReducer, ReduceOptions
from maxact.server.scan.reducers import check_k
from maxact.server.settings import DEFAULT_CHECKPOINT_IMAGES, DEFAULT_SHARD_IMAGES

log = logging.getLogger("maxact.server")

MAX_LAYERS = 16
MAX_REQUEST_ID = 128
# how long DeleteScan waits for a running scan's worker to stop
DELETE_WAIT_SECONDS = 30.0


@dataclass
class _RunProgress:
    """Where a running scan is: images done/failed (checkpoint included), the position of the
    last checkpoint and of the last finished batch, and when progress was last stored."""

    done: int
    failed: int
    saved: int
    position: int
    written: float = field(default_factory=time.monotonic)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class _Running:
    thread: threading.Thread
    cancel: threading.Event
    engine: _Stoppable | None = None  # the scan engine, or the shard executor
    scan_id: str = ""
    # set once the worker holds a slot; before that it waits and writes nothing
    holds_slot: threading.Event = field(default_factory=threading.Event)


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
    ) -> None:
        self.store = store
        self.models = models
        self.datasets = datasets
        self.checkpoint_images = checkpoint_images
        # None: scans run in this process; else each scan's shards go to a new executor
        self.shard_executor = shard_executor
        self.shard_images = shard_images
        self._slots = threading.Semaphore(max_running)
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._queued = self._active = 0
        # failures the store could not record (e.g. a full disk): reported from memory, so a
        # scan always reaches a final state for its watchers
        self._unrecorded_failures: dict[str, ScanError] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def resume_unfinished(self) -> list[str]:
        """Start (again) every queued or running scan; called once when the server starts."""
        resumed = []
        for record in self.store.unfinished():
            if record.damage:
                self._fail(record.id, _damaged(record.damage))
                continue
            if record.resume_attempts >= MAX_RESUME_ATTEMPTS:
                self._fail(
                    record.id,
                    ScanError(
                        grpc.StatusCode.ABORTED.value[0],
                        "TOO_MANY_RESTARTS",
                        f"the server stopped abnormally {record.resume_attempts} times while this"
                        " scan ran, before it reached a checkpoint (e.g. out of memory); it is not"
                        " resumed again",
                    ),
                )
                continue
            try:
                self.store.set_state(record.id, ScanState.QUEUED)
            except ServiceError as error:
                self._fail(record.id, _scan_error(error))
                continue
            self._start(record.id)
            resumed.append(record.id)
        if resumed:
            log.info("resuming %d unfinished scan(s): %s", len(resumed), ", ".join(resumed))
        return resumed

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop running scans without marking them cancelled: a restart resumes them."""
        self._closing.set()
        with self._lock:
            running = list(self._running.values())
        for job in running:
            job.cancel.set()
            if job.engine is not None:
                job.engine.stop()
        for job in running:
            job.thread.join(timeout)
        for job in running:
            with suppress(ServiceError):  # stopped cleanly: a restart resumes it, no crash counted
                self.store.clear_resumes(job.scan_id)

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
    ) -> ScanRecord:
        """Validate everything a scan needs now, so a bad request fails at once, not later.

        `request_id` makes a retry return the scan the first call created; `deadline`
        (time.monotonic()) refuses to commit a scan the caller has stopped waiting for: it
        would run with nobody knowing its id."""
        if len(request_id) > MAX_REQUEST_ID:
            raise invalid_argument(
                "INVALID_REQUEST_ID", f"request_id is longer than {MAX_REQUEST_ID} characters"
            )
        if not layers:
            raise invalid_argument("LAYERS_REQUIRED", "a scan needs at least one layer")
        if len(set(layers)) > MAX_LAYERS:
            raise invalid_argument("TOO_MANY_LAYERS", f"at most {MAX_LAYERS} layers per scan")
        check_k(k)
        model = self.models.get(model_name)
        prep = model.resolve(preprocessing)
        for layer in dict.fromkeys(layers):
            require_field(model.layer(prep.reference_size, layer))
        dataset = self.datasets.open(dataset_name)
        scan = NewScan(
            model_name,
            tuple(dict.fromkeys(layers)),
            dataset_name,
            k,
            mode,
            prep.as_request().to_dict(),  # resolved now: a later sidecar edit changes nothing
        )
        try:
            record, created = self.store.create_scan(
                uuid.uuid4().hex[:16],
                scan,
                list(dataset.ids),
                request_id,
                before_commit=_deadline_check(deadline),
            )
        except RequestIdReused as reused:
            raise already_exists(
                "REQUEST_ID_REUSED",
                f"request_id {request_id!r} already created scan "
                f"'{resources.scan_name(reused.scan_id)}'"
                " from a different request; use a new request_id",
                request_id=request_id,
                scan=reused.scan_id,
            ) from None
        if created:
            self._start(record.id)
        return record

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
                    grpc.StatusCode.UNAVAILABLE,
                    "SCAN_STILL_STOPPING",
                    f"scan '{resources.scan_name(scan_id)}' was cancelled but has not stopped "
                    "yet; retry",
                    {"scan": scan_id},
                )
        self.store.delete(scan_id)

    # -- running ---------------------------------------------------------------------------
    def _start(self, scan_id: str) -> None:
        job = _Running(
            threading.Thread(
                target=self._run, args=(scan_id,), name=f"maxact-scan-job-{scan_id}", daemon=True
            ),
            threading.Event(),
            scan_id=scan_id,
        )
        with self._lock:
            self._running[scan_id] = job
        job.thread.start()

    def _gauges(self, delta_queued: int, delta_running: int) -> None:
        with self._lock:
            self._queued += delta_queued
            self._active += delta_running
            SCANS_QUEUED.set(self._queued)
            SCANS_RUNNING.set(self._active)

    def _run(self, scan_id: str) -> None:
        job = self._running[scan_id]
        self._gauges(+1, 0)
        try:
            with self._slots:
                job.holds_slot.set()
                self._gauges(-1, +1)
                try:
                    if job.cancel.is_set() or self._closing.is_set():
                        return
                    self._scan(scan_id, job)
                finally:
                    self._gauges(0, -1)
        except EngineCancelled:
            pass
        except ServiceError as error:
            self._fail(scan_id, _scan_error(error))
        except Exception as exc:
            log.exception("scan %s failed", scan_id)
            self._fail(
                scan_id,
                ScanError(
                    grpc.StatusCode.INTERNAL.value[0], "SCAN_FAILED", f"{type(exc).__name__}: {exc}"
                ),
            )
        finally:
            with self._lock:
                self._running.pop(scan_id, None)

    def _fail(self, scan_id: str, error: ScanError) -> None:
        """Mark the scan failed; when the store cannot take it (full disk), remember it in
        memory so the scan still ends `failed` for everyone watching."""
        if self._closing.is_set():
            return
        try:
            self.store.transition(scan_id, ScanState.FAILED, ACTIVE_STATES, error)
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

    def _scan(self, scan_id: str, job: _Running) -> None:
        record = self.get(scan_id)
        if record.finished:
            return
        model, prep, layers = self.prepare(record)
        # the snapshot taken at creation, not a new listing: a resumed scan sees the same images
        root = self.datasets.root_of(record.dataset)
        try:
            ids = self.store.image_ids(scan_id)
        except ValueError as exc:
            raise failed_precondition("SCAN_DAMAGED", f"damaged store row: {exc}") from None
        for image_id in ids:  # stored ids are re-checked: a store row is not trusted
            check_name(image_id, "stored image")
        label_of = read_labels(root, ids)
        classes = tuple(sorted(set(label_of.values())))
        class_ids = {name: i for i, name in enumerate(classes)}
        labels = np.asarray([class_ids.get(label_of.get(i, ""), -1) for i in ids])
        options = ReduceOptions(k=record.k, bottom=True, position=record.mode is TopKMode.POSITION)
        if self.shard_executor is not None or self.store.shards(scan_id):
            self._scan_shards(record, job, ids, labels, classes, layers, options)
            return
        engine = ScanEngine(model, layers, prep, options, classes=classes)
        job.engine = engine
        if job.cancel.is_set():
            return
        start, base_done, base_failed = 0, 0, 0
        states = self.store.checkpoint(scan_id)
        if states and record.checkpoint_position > 0:
            for name, reducer in engine.reducers.items():
                reducer.load_state(states[name])
            start = record.checkpoint_position
            base_done, base_failed = record.checkpoint_done, record.checkpoint_failed
        # counted before it runs, reset at each checkpoint: a scan that takes the server down
        # (e.g. out of memory) is not resumed into a crash loop
        self.store.count_run(scan_id)
        if not self.store.transition(scan_id, ScanState.RUNNING, ACTIVE_STATES):
            return  # cancelled while it was being prepared
        cache = self.datasets.input_cache_for(record.dataset)
        sources = dataset_sources(root, ids[start:], range(start, len(ids)), cache)
        progress = _RunProgress(done=base_done, failed=base_failed, saved=start, position=start)

        def on_progress(done: int, total: int, failed: int) -> None:
            progress.done, progress.failed = base_done + done, base_failed + failed
            if time.monotonic() - progress.written > 0.5:
                progress.written = time.monotonic()
                self.store.set_progress(scan_id, progress.done, progress.failed)

        def save(position: int) -> None:
            states = {name: r.state() for name, r in engine.reducers.items()}
            self.store.save_checkpoint(
                scan_id, Checkpoint(position, progress.done, progress.failed, states)
            )
            progress.saved = position

        def on_batch(position: int) -> None:
            # the reducers hold exactly the images before `position` here
            progress.position = position
            if position - progress.saved >= self.checkpoint_images:
                save(position)

        try:
            outcome = engine.run(
                sources,
                labels,
                EngineCallbacks(progress=on_progress, batch_done=on_batch),
                total=len(ids) - start,
            )
        except EngineCancelled:
            if self._closing.is_set() and progress.position > progress.saved:
                save(progress.position)  # shutting down: keep the work done so far
            raise
        if job.cancel.is_set():
            raise EngineCancelled()
        SCAN_IMAGES_PER_SECOND.set(outcome.images_scanned / max(outcome.seconds, 1e-9))
        done = base_done + outcome.images_scanned
        failed = base_failed + outcome.images_failed
        self.store.finish(
            scan_id,
            self._rows(engine.reducers, ids),
            self._statistics(engine.reducers, labels),
            done,
            failed,
        )

    def _scan_shards(
        self,
        record: ScanRecord,
        job: _Running,
        ids: list[str],
        labels: np.ndarray,
        classes: tuple[str, ...],
        layers: list[LayerEntry],
        options: ReduceOptions,
    ) -> None:
        """Run the scan's unfinished shards on the executor, merging each as it reports."""
        scan_id = record.id
        fields = {layer.name: layer for layer in layers}

        def fresh(name: str) -> LayerReducer:
            layer = fields[name]
            return LayerReducer(name, layer.field, layer.shape, options, classes)

        reducers = {name: fresh(name) for name in fields}
        states = self.store.checkpoint(scan_id)
        if states:  # a local checkpoint prefix and/or the shards finished before a restart
            for name, reducer in reducers.items():
                reducer.load_state(states[name])
        shards = self.store.plan_shards(
            scan_id, shard_ranges(record.checkpoint_position, len(ids), self.shard_images)
        )
        totals = {
            "done": record.checkpoint_done + sum(s.images_done for s in shards if s.done),
            "failed": record.checkpoint_failed + sum(s.images_failed for s in shards if s.done),
        }
        if not self.store.transition(scan_id, ScanState.RUNNING, ACTIVE_STATES):
            return  # cancelled while it was being prepared
        self.store.set_progress(scan_id, totals["done"], totals["failed"])
        tasks = [
            ShardTask(s.shard, s.first, ids[s.first : s.stop], labels[s.first : s.stop].tolist())
            for s in shards
            if not s.done
        ]
        work = ShardWork(
            scan_id,
            record.model,
            list(record.layers),
            record.dataset,
            record.k,
            record.mode,
            dict(record.preprocessing),
            list(classes),
        )

        def finished(result: ShardResult) -> None:
            for name, state in result.states.items():
                part = fresh(name)
                part.load_state_dict(state)
                reducers[name].merge(part)
            totals["done"] += result.done
            totals["failed"] += result.failed
            self.store.finish_shard(
                scan_id,
                result.shard,
                result.done,
                result.failed,
                {name: reducer.state() for name, reducer in reducers.items()},
                totals["done"],
                totals["failed"],
            )

        executor = (
            self.shard_executor()
            if self.shard_executor is not None
            else LocalShardExecutor(self.models, self.datasets)
        )
        job.engine = executor
        if job.cancel.is_set():
            raise EngineCancelled()
        started = time.monotonic()
        executor.run(
            work,
            tasks,
            lambda shard: self.store.shard_started(scan_id, shard),
            finished,
            job.cancel,
        )
        if job.cancel.is_set():
            raise EngineCancelled()
        images = sum(len(task.ids) for task in tasks)
        SCAN_IMAGES_PER_SECOND.set(images / max(time.monotonic() - started, 1e-9))
        self.store.finish(
            scan_id,
            self._rows(reducers, ids),
            self._statistics(reducers, labels),
            totals["done"],
            totals["failed"],
        )

    @staticmethod
    def _rows(reducers: dict[str, LayerReducer], ids: list[str]) -> list[TopKRow]:
        rows = []
        for name, reducer in reducers.items():
            for kind in reducer.kinds():
                for position, channel in enumerate(reducer.channels):
                    for rank, entry in enumerate(reducer.entries(position, kind), start=1):
                        rows.append(
                            TopKRow(
                                name,
                                channel,
                                kind,
                                rank,
                                ids[entry.image],
                                float(entry.score),
                                entry.y,
                                entry.x,
                            )
                        )
        return rows

    @staticmethod
    def _statistics(
        reducers: dict[str, LayerReducer], labels: np.ndarray
    ) -> dict[str, LayerStatistics]:
        return {name: reducer.statistics(labels).document() for name, reducer in reducers.items()}


def _deadline_check(deadline: float | None) -> Callable[[], None]:
    """Raises DEADLINE_EXCEEDED once `deadline` (time.monotonic()) has passed."""

    def check() -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "DEADLINE_EXCEEDED",
                "the call's deadline passed before the scan was stored; nothing was created",
            )

    return check


def _scan_error(error: ServiceError) -> ScanError:
    return ScanError(error.code.value[0], error.reason, error.message)


def _damaged(damage: str) -> ScanError:
    return ScanError(grpc.StatusCode.DATA_LOSS.value[0], "SCAN_DAMAGED", damage)
