"""A persisted scan as shards: the plan, the work of one shard, and the in-process executor.

A shard is a range [first, stop) of the scan's image snapshot. Scanning a shard is the SAME
scan engine a local scan runs (pruned session, reducers) over that range only; the result is
the reducers' `state_dict()` (plain numpy arrays keyed by layer) plus counts, so it can cross
a process or machine boundary as data and be merged exactly (`LayerReducer.merge`) by the
server: a shard's image indices are global to the scan, and every reducer merge is exact.

`ShardWork` and `ShardTask` are plain data (str/int/list/dict) for the same reason: a Ray
worker receives them without unpickling any maxact class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from maxact.server.data.datasets import DatasetCatalog, dataset_sources
from maxact.server.data.preprocess import ResolvedPreprocessing, parse_mapping
from maxact.server.models.registry import LayerEntry, LoadedModel, ModelRegistry
from maxact.server.scan.engine import EngineCallbacks, EngineCancelled, ScanEngine
from maxact.server.scan.layer import ReduceOptions

LayerStates = dict[str, dict[str, np.ndarray]]


def shard_ranges(start: int, total: int, shard_images: int) -> list[tuple[int, int]]:
    """[first, stop) ranges covering images start..total-1, `shard_images` each (the last may
    be shorter)."""
    return [(i, min(i + shard_images, total)) for i in range(start, total, shard_images)]


@dataclass(frozen=True)
class ShardWork:
    """What every shard of one scan shares: enough to rebuild the scan engine anywhere."""

    scan_id: str
    model: str
    layers: list[str]
    dataset: str
    k: int
    mode: str
    preprocessing: dict[str, Any]
    classes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    shard: int
    states: LayerStates
    done: int
    failed: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "states": self.states,
            "done": self.done,
            "failed": self.failed,
            "skipped": [list(pair) for pair in self.skipped],
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> ShardResult:
        states = {
            str(layer): {str(key): np.asarray(value) for key, value in arrays.items()}
            for layer, arrays in data["states"].items()
        }
        skipped = [(str(a), str(b)) for a, b in data.get("skipped", [])]
        return ShardResult(
            int(data["shard"]), states, int(data["done"]), int(data["failed"]), skipped
        )


def scan_setup(
    models: ModelRegistry, model_name: str, preprocessing: Mapping[str, Any], layers: Sequence[str]
) -> tuple[LoadedModel, ResolvedPreprocessing, list[LayerEntry]]:
    """The model, resolved preprocessing and layer entries a stored scan runs with: the same
    for the server's scan job and for each shard a worker runs."""
    model = models.get(model_name)
    prep = model.resolve(parse_mapping(preprocessing, "scan preprocessing"))
    return model, prep, [model.layer(prep.reference_size, name) for name in layers]


def scan_shard(
    models: ModelRegistry,
    datasets: DatasetCatalog,
    work: ShardWork,
    task: ShardTask,
    stop: threading.Event | None = None,
    on_engine: Callable[[ScanEngine], None] = lambda engine: None,
) -> ShardResult:
    """Run the scan engine over one shard and return its reducers' state."""
    model, prep, layers = scan_setup(models, work.model, work.preprocessing, work.layers)
    options = ReduceOptions(k=work.k, bottom=True, position=work.mode == "position")
    engine = ScanEngine(model, layers, prep, options, classes=tuple(work.classes))
    on_engine(engine)
    if stop is not None and stop.is_set():
        raise EngineCancelled()
    stop_at = task.first + len(task.ids)
    labels = np.full(stop_at, -1, dtype=np.int64)
    labels[task.first :] = task.labels
    indices = range(task.first, stop_at)
    skipped: list[tuple[str, str]] = []
    sources = dataset_sources(datasets.root_of(work.dataset), task.ids, indices)
    outcome = engine.run(
        sources,
        labels,
        EngineCallbacks(skipped=lambda image_id, reason: skipped.append((image_id, reason))),
        total=len(task.ids),
    )
    states = {name: reducer.state_dict() for name, reducer in engine.reducers.items()}
    return ShardResult(task.shard, states, outcome.images_scanned, outcome.images_failed, skipped)


class ShardExecutor(Protocol):
    """Runs the given shards of a scan and reports each finished one (in any order)."""

    def run(
        self,
        work: ShardWork,
        tasks: Sequence[ShardTask],
        started: Callable[[int], None],
        finished: Callable[[ShardResult], None],
        cancel: threading.Event,
    ) -> None:
        """Returns when every shard was reported; raises EngineCancelled once `cancel` is set,
        or an error when a shard cannot be scanned."""
        ...

    def stop(self) -> None:
        """Abort the work in progress (cancel or server shutdown)."""
        ...


class LocalShardExecutor:
    """Shards one after another in this process (a scan planned as shards by a Ray server and
    resumed by a server without Ray)."""

    def __init__(self, models: ModelRegistry, datasets: DatasetCatalog) -> None:
        self.models = models
        self.datasets = datasets
        self._engine: ScanEngine | None = None
        self._stop = threading.Event()

    def run(
        self,
        work: ShardWork,
        tasks: Sequence[ShardTask],
        started: Callable[[int], None],
        finished: Callable[[ShardResult], None],
        cancel: threading.Event,
    ) -> None:
        for task in tasks:
            if cancel.is_set() or self._stop.is_set():
                raise EngineCancelled()
            started(task.shard)
            finished(scan_shard(self.models, self.datasets, work, task, cancel, self._keep))

    def _keep(self, engine: ScanEngine) -> None:
        self._engine = engine

    def stop(self) -> None:
        self._stop.set()
        if self._engine is not None:
            self._engine.stop()
