"""A persisted scan as shards: the plan, the work of one shard, and the in-process executor.

A shard is a range [first, stop) of the scan's image snapshot. Every scan runs as shards: a
local scan is the one-worker case (`LocalShardExecutor`: one shard for the rest of the scan,
reported part by part at each checkpoint), a Ray cluster the many-worker one. Scanning a shard
is the same scan engine either way; the result is the reducers' `state_dict()` (plain numpy
arrays keyed by layer) plus counts, so it can cross a process or machine boundary as data and
be merged exactly (`LayerReducer.merge`) by the server: a shard's image indices are global to
the scan, and every reducer merge is exact.

`ShardWork` and `ShardTask` are plain data (str/int/list/dict) for the same reason: a Ray
worker receives them without unpickling any maxact class.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from maxact.common.kinds import TopKMode
from maxact.server.data.datasets import DatasetCatalog, dataset_sources
from maxact.server.data.preprocess import ResolvedPreprocessing, parse_mapping
from maxact.server.models.registry import LayerEntry, LoadedModel, ModelRegistry
from maxact.server.scan.engine import EngineCallbacks, EngineCancelled, ScanEngine
from maxact.server.scan.kept_maps import layers_keeping_maps, planned_bytes
from maxact.server.scan.layer import ReduceOptions

LayerStates = dict[str, dict[str, np.ndarray]]
# a worker reporting its parts (the local one) hands its kept responses over at the latest
# after this many values (64 MiB of float32), whatever --checkpoint-images says
RESPONSES_BLOCK_VALUES = 1 << 24


def shard_ranges(start: int, total: int, shard_images: int) -> list[tuple[int, int]]:
    """[first, stop) ranges covering images start..total-1, `shard_images` each (the last may
    be shorter)."""
    return [(i, min(i + shard_images, total)) for i in range(start, total, shard_images)]


def reduce_options(
    k: int, mode: TopKMode, responses: bool = False, layers: Sequence[LayerEntry] = ()
) -> ReduceOptions:
    """What a scan's reducers keep: top and bottom k, per image or per position, with
    `responses` every image's response per channel, and per image the activation maps of
    the kept entries of those of `layers` that fit the scan's bound (`kept_maps`)."""
    position = mode is TopKMode.POSITION
    return ReduceOptions(
        k=k,
        bottom=True,
        position=position,
        keep_responses=responses,
        keep_maps=() if position else _layers_keeping_maps(k, layers),
    )


def _layers_keeping_maps(k: int, layers: Sequence[LayerEntry]) -> tuple[str, ...]:
    planned = [
        (layer.name, planned_bytes(k, field.channels, field.height, field.width))
        for layer in layers
        if (field := layer.field) is not None and field.spatial
    ]
    return layers_keeping_maps(planned)


@dataclass(frozen=True)
class ShardWork:
    """What every shard of one scan shares: enough to rebuild the scan engine anywhere."""

    scan_id: str
    model: str
    layers: list[str]
    dataset: str
    k: int
    mode: str  # a TopKMode value (plain data for Ray)
    preprocessing: dict[str, Any]
    classes: list[str]
    responses: bool = False  # hand over each part's per-image responses (ShardResult)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def options(self, layers: Sequence[LayerEntry]) -> ReduceOptions:
        """What the reducers of this scan's `layers` (their catalogue rows) keep."""
        return reduce_options(self.k, TopKMode(self.mode), self.responses, layers)


@dataclass(frozen=True)
class ShardTask:
    """One shard: its images (ids at dataset indices first..) and their class ids (-1: none)."""

    shard: int
    first: int
    ids: list[str]
    labels: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ShardResult:
    """The reducer states of a shard's images (all of them, or with `stop` only those before
    that dataset index: the rest of the shard is still to come); with responses kept, per
    layer the block of rows first.. of the scan's responses matrix."""

    shard: int
    states: LayerStates
    done: int
    failed: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason)
    stop: int | None = None
    first: int = 0
    responses: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "states": self.states,
            "done": self.done,
            "failed": self.failed,
            "skipped": [list(pair) for pair in self.skipped],
            "stop": self.stop,
            "first": self.first,
            "responses": self.responses,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> ShardResult:
        states = {
            str(layer): {str(key): np.asarray(value) for key, value in arrays.items()}
            for layer, arrays in data["states"].items()
        }
        skipped = [(str(a), str(b)) for a, b in data.get("skipped", [])]
        stop = data.get("stop")
        responses = {
            str(layer): np.asarray(block, dtype=np.float32)
            for layer, block in data.get("responses", {}).items()
        }
        return ShardResult(
            int(data["shard"]),
            states,
            int(data["done"]),
            int(data["failed"]),
            skipped,
            None if stop is None else int(stop),
            int(data.get("first", 0)),
            responses,
        )


@dataclass(frozen=True)
class ShardEvents:
    """What an executor reports while it runs (from its own threads)."""

    started: Callable[[int], None]  # a shard was sent to a worker
    finished: Callable[[ShardResult], None]  # a shard, or a part of it, was scanned
    # images done / failed since the last `finished` (a worker that can say so)
    progress: Callable[[int, int], None] = lambda done, failed: None


def scan_setup(
    models: ModelRegistry, model_name: str, preprocessing: Mapping[str, Any], layers: Sequence[str]
) -> tuple[LoadedModel, ResolvedPreprocessing, list[LayerEntry]]:
    """The model, resolved preprocessing and layer entries a stored scan runs with: the same
    for the server's scan job and for each shard a worker runs."""
    model = models.get(model_name)
    prep = model.resolve(parse_mapping(preprocessing, "scan preprocessing"))
    return model, prep, [model.layer(prep.reference_size, name) for name in layers]


def shard_engine(models: ModelRegistry, work: ShardWork) -> ScanEngine:
    """The scan engine a worker runs the shards of `work` with."""
    model, prep, layers = scan_setup(models, work.model, work.preprocessing, work.layers)
    engine = ScanEngine(model, layers, prep, work.options(layers), classes=tuple(work.classes))
    engine.memory_wait = math.inf  # a background scan waits for room until it is stopped
    return engine


class _TaskScan:
    """One shard through an engine, handing over a part every `every` images (0: never) at
    a consistent point; the rest when the shard ends or the engine is stopped."""

    def __init__(
        self, engine: ScanEngine, task: ShardTask, events: ShardEvents | None, every: int
    ) -> None:
        self.engine, self.task, self.events, self.every = engine, task, events, every
        self.first = task.first  # the images before it were handed over
        self.done = self.failed = 0  # in this run
        self.handed = (0, 0, 0)  # done, failed, skipped already handed over
        self.skipped: list[tuple[str, str]] = []
        self.consistent = -1  # the reducers hold exactly the images before it (-1: unknown)
        channels = sum(len(r.channels) for r in engine.reducers.values())
        keeps = engine.options.keep_responses and channels > 0
        self.block_images = max(1, RESPONSES_BLOCK_VALUES // channels) if keeps else 0

    def callbacks(self) -> EngineCallbacks:
        return EngineCallbacks(
            progress=self._progress,
            skipped=lambda image_id, reason: self.skipped.append((image_id, reason)),
            reduced=self._reduced,
            batch_done=self._batch_done,
        )

    def _progress(self, done: int, total: int, failed: int) -> None:
        self.done, self.failed = done, failed
        if self.events is not None:
            self.events.progress(done - self.handed[0], failed - self.handed[1])

    def _reduced(self, indices: list[int]) -> None:
        self.consistent = -1

    def _batch_done(self, position: int) -> None:
        self.consistent = position
        stop = self.task.first + len(self.task.ids)
        scanned = position - self.first
        due = self.every and scanned >= self.every
        # kept responses wait in memory until handed over: at most RESPONSES_BLOCK_VALUES
        full = self.block_images and scanned >= self.block_images and self.events is not None
        if (due or full) and position < stop:
            self.hand_over(position)

    def hand_over(self, stop: int | None) -> ShardResult:
        """The part scanned since the last hand-over (images before `stop`; None: the rest)."""
        reducers = self.engine.take_reducers()
        done, failed, skipped = self.handed
        end = self.task.first + len(self.task.ids) if stop is None else stop
        responses = {}
        if self.engine.options.keep_responses:
            responses = {
                name: reducer.take_responses(self.first, end) for name, reducer in reducers.items()
            }
        result = ShardResult(
            self.task.shard,
            {name: reducer.state_dict() for name, reducer in reducers.items()},
            self.done - done,
            self.failed - failed,
            self.skipped[skipped:],
            stop,
            self.first,
            responses,
        )
        self.handed = (self.done, self.failed, len(self.skipped))
        if stop is not None:
            self.first = stop
            if self.events is not None:
                self.events.finished(result)
        return result


def scan_task(
    engine: ScanEngine,
    datasets: DatasetCatalog,
    work: ShardWork,
    task: ShardTask,
    events: ShardEvents | None = None,
    every: int = 0,
) -> ShardResult:
    """Run `engine` (empty reducers) over one shard and return the reducers' state of the
    shard's images; with `events`, parts are reported every `every` images and, when the
    engine is stopped, the part scanned up to its last consistent point."""
    stop_at = task.first + len(task.ids)
    labels = np.full(stop_at, -1, dtype=np.int64)
    labels[task.first :] = task.labels
    sources = dataset_sources(
        datasets.root_of(work.dataset),
        task.ids,
        range(task.first, stop_at),
        datasets.input_cache_for(work.dataset),
    )
    scan = _TaskScan(engine, task, events, every)
    try:
        engine.run(sources, labels, scan.callbacks(), total=len(task.ids))
    except EngineCancelled:
        if events is not None and scan.consistent > scan.first:
            scan.hand_over(scan.consistent)  # stopped: keep the work done so far
        raise
    return scan.hand_over(None)


def scan_shard(
    models: ModelRegistry, datasets: DatasetCatalog, work: ShardWork, task: ShardTask
) -> ShardResult:
    """Run the scan engine over one shard and return its reducers' state (a Ray worker)."""
    return scan_task(shard_engine(models, work), datasets, work, task)


class ShardExecutor(Protocol):
    """Runs the given shards of a scan and reports each finished one (in any order)."""

    def run(
        self,
        work: ShardWork,
        tasks: Sequence[ShardTask],
        events: ShardEvents,
        cancel: threading.Event,
    ) -> None:
        """Returns when every shard was reported; raises EngineCancelled once `cancel` is set,
        or an error when a shard cannot be scanned."""
        ...

    def stop(self) -> None:
        """Abort the work in progress (cancel or server shutdown)."""
        ...


class LocalShardExecutor:
    """The one-worker executor: shards one after another in this process through one engine
    (one onnxruntime session), each reported in parts every `checkpoint_images` images (a
    local scan plans one shard for all its images, so the decode pipeline never restarts)."""

    def __init__(
        self, models: ModelRegistry, datasets: DatasetCatalog, checkpoint_images: int
    ) -> None:
        self.models = models
        self.datasets = datasets
        self.checkpoint_images = checkpoint_images
        self._engine: ScanEngine | None = None
        self._stop = threading.Event()

    def run(
        self,
        work: ShardWork,
        tasks: Sequence[ShardTask],
        events: ShardEvents,
        cancel: threading.Event,
    ) -> None:
        for task in sorted(tasks, key=lambda task: task.first):
            if cancel.is_set() or self._stop.is_set():
                raise EngineCancelled()
            if self._engine is None:
                self._engine = shard_engine(self.models, work)
                if self._stop.is_set():  # stopped while the engine was built
                    raise EngineCancelled()
            events.started(task.shard)
            result = scan_task(
                self._engine, self.datasets, work, task, events, self.checkpoint_images
            )
            if cancel.is_set():
                raise EngineCancelled()
            events.finished(result)

    def stop(self) -> None:
        self._stop.set()
        if self._engine is not None:
            self._engine.stop()
