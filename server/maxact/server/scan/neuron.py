"""Scan a dataset for one neuron: batched inference on the pruned graph, then running top-k.

Every query runs on the layer scan engine (`scan.engine`), restricted to the one channel and,
for a single unit (C, y, x), to that unit (`ReduceOptions.unit`).

Modes (docs/contracts.md): `image` keeps at most one entry per image (the channel's max over space,
or the single unit's value; `bottom` ranks the same per-image responses ascending);
`position` keeps the best units anywhere, suppressing units whose receptive-field boxes
overlap a better unit of the same image; flat tensors rank an index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from maxact.common.defaults import DEFAULT_K
from maxact.common.kinds import TopKKind, TopKMode
from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.data.reader import ImageSource, known_total
from maxact.server.models.registry import LayerEntry, LoadedModel
from maxact.server.rf import TensorField
from maxact.server.scan.engine import EngineCallbacks, EngineCancelled, ScanEngine, Total
from maxact.server.scan.layer import ReduceOptions
from maxact.server.scan.reducers import Entry


@dataclass(frozen=True)
class NeuronQuery:
    layer: str
    channel: int
    unit: tuple[int, int] | None = None
    k: int = DEFAULT_K
    mode: TopKMode = TopKMode.IMAGE
    bottom: bool = False
    per_image_cap: int = 0


@dataclass(frozen=True)
class Hit:
    """A ranked response; `box` is the exact receptive field in model-input pixels."""

    rank: int
    image_index: int
    image_id: str
    score: float
    unit: tuple[int, int]
    channel: int
    box: tuple[int, int, int, int]


@dataclass
class ScanOutcome:
    hits: list[Hit]
    images_scanned: int
    images_failed: int
    cancelled: bool


class ScanCancelled(Exception):
    """The client went away or cancelled; the scan stopped between (or inside) runs."""


@dataclass
class ScanCallbacks:
    progress: Callable[[int, int, int], None] = lambda done, total, failed: None
    partial: Callable[[list[Hit], int], None] = lambda hits, done: None
    skipped: Callable[[str, str], None] = lambda image_id, reason: None
    partial_interval: float = 0.5
    # the image indices just reduced or skipped, before `progress`; `kept_images()` is
    # consistent here
    reduced: Callable[[list[int]], None] = lambda indices: None


V = TypeVar("V")


class HeldWhileNeeded(Generic[V]):
    """A value per image index (its id, its bytes), held while the image is in flight and,
    once reduced, only while the ranking keeps it: memory bounded by k plus the reader's
    window, whatever the number of images. Thread-safe."""

    def __init__(self) -> None:
        self._values: dict[int, V] = {}
        self._reduced: set[int] = set()  # reduced and still held (in the ranking)
        self._lock = threading.Lock()

    def add(self, index: int, value: V) -> None:
        with self._lock:
            self._values[index] = value

    def get(self, index: int) -> V | None:
        with self._lock:
            return self._values.get(index)

    def reduced(self, indices: Iterable[int], kept: Callable[[], set[int]]) -> None:
        """`indices` were reduced (or skipped): release every reduced one not in `kept()`."""
        with self._lock:
            self._reduced.update(indices)
            ranked = kept()
            for index in [i for i in self._reduced if i not in ranked]:
                self._reduced.discard(index)
                self._values.pop(index, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def total(self, size: Callable[[V], int]) -> int:
        """The summed `size` of every value held now (memory accounting)."""
        with self._lock:
            return sum(size(value) for value in self._values.values())


class NeuronScan:
    """One pass over images for one neuron; thread-safe to stop from another thread."""

    def __init__(
        self,
        model: LoadedModel,
        layer: LayerEntry,
        query: NeuronQuery,
        prep: ResolvedPreprocessing,
        batch_size: int | None = None,  # None: the device's default (16 on CPUs, 64 on GPUs)
    ) -> None:
        self.model = model
        self.layer = layer
        self.query = query
        self.prep = prep
        self._ids: HeldWhileNeeded[str] = HeldWhileNeeded()
        # each held image's model-input size, where it depends on the image
        self._sizes: HeldWhileNeeded[tuple[int, int]] = HeldWhileNeeded()
        self._engine = _engine_for(model, layer, query, prep, batch_size)
        self._reducer = self._engine.reducers[layer.name]
        self._kind = _kind(query, self._reducer.spatial)
        self.stop_event = self._engine.stop_event
        self.batch_size = self._engine.batch_size

    def stop(self) -> None:
        """Stop promptly: between batches, and abort a run in progress."""
        self._engine.stop()

    def run(
        self,
        sources: Iterable[ImageSource],
        callbacks: ScanCallbacks,
        total: Total | None = None,
    ) -> ScanOutcome:
        """Scan `sources`: a list, or an iterator of images still arriving (indices 0, 1, ...
        in iteration order). `total` is what progress reports as images_total: default
        `len(sources)` for a list, else 0 (unknown); a function is asked at each report."""
        total = known_total(sources) if total is None else total
        try:
            outcome = self._engine.run(
                self._recording(sources),
                total=total,
                callbacks=EngineCallbacks(
                    reduced=lambda indices: self._reduced(indices, callbacks),
                    sized=self._sized,
                    progress=callbacks.progress,
                    skipped=callbacks.skipped,
                    partial=lambda done: callbacks.partial(self.hits(), done),
                    partial_interval=callbacks.partial_interval,
                ),
            )
        except EngineCancelled:
            raise ScanCancelled() from None
        return ScanOutcome(self.hits(), outcome.images_scanned, outcome.images_failed, False)

    def _recording(self, sources: Iterable[ImageSource]) -> Iterator[ImageSource]:
        """Remember each image's id as the reader takes it (forgotten once out of the top-k)."""
        for source in sources:
            self._ids.add(source.index, source.image_id)
            yield source

    def _sized(self, indices: list[int], size: tuple[int, int]) -> None:
        if self.prep.fixed_size is None:
            for index in indices:
                self._sizes.add(index, size)

    def _reduced(self, indices: list[int], callbacks: ScanCallbacks) -> None:
        self._ids.reduced(indices, self.kept_images)
        self._sizes.reduced(indices, self.kept_images)
        callbacks.reduced(indices)

    @property
    def ids_held(self) -> int:
        """How many image ids the scan holds now (ranked or in flight)."""
        return len(self._ids)

    def kept_images(self) -> set[int]:
        """Indices of the images the ranking holds now (call where the reducer is consistent:
        in the progress callback, or after the scan)."""
        images = self._reducer.top_images(self._kind)
        return {int(index) for index in np.asarray(images).ravel() if index >= 0}

    def hits(self) -> list[Hit]:
        entries = self._reducer.entries(0, self._kind)
        return [self._hit(rank, entry) for rank, entry in enumerate(entries, start=1)]

    def _image_id(self, index: int) -> str:
        image_id = self._ids.get(index)
        if image_id is None:  # never: ranked images stay held
            raise LookupError(f"the id of ranked image {index} was released")
        return image_id

    def _hit(self, rank: int, entry: Entry) -> Hit:
        size = self.prep.fixed_size or self._sizes.get(entry.image)
        if size is None:  # never: ranked images stay held
            raise LookupError(f"the input size of ranked image {entry.image} was released")
        field = self._engine.layer_at(size, self.layer.name).field
        box = input_box(field, size, entry.y, entry.x, self.query.channel)
        return Hit(
            rank,
            entry.image,
            self._image_id(entry.image),
            entry.score,
            (entry.y, entry.x),
            self.query.channel,
            box,
        )


def _kind(query: NeuronQuery, spatial: bool) -> TopKKind:
    """Which of the engine's rankings answers the query (flat tensors have no positions; a
    single unit has one position per image, so its mode is moot)."""
    position = query.mode == TopKMode.POSITION and spatial and query.unit is None
    return TopKKind.of(TopKMode.POSITION if position else TopKMode.IMAGE, query.bottom)


def _engine_for(
    model: LoadedModel,
    layer: LayerEntry,
    query: NeuronQuery,
    prep: ResolvedPreprocessing,
    batch_size: int | None,
) -> ScanEngine:
    """An engine restricted to the query's channel (and unit), keeping only the ranking it
    asks for."""
    kind = _kind(query, layer.field is not None and layer.field.spatial)
    options = ReduceOptions(
        k=query.k,
        bottom=kind is TopKKind.BOTTOM,
        position=kind is TopKKind.POSITION,
        position_bottom=kind is TopKKind.POSITION_BOTTOM,
        per_image_cap=query.per_image_cap,
        unit=query.unit,
    )
    return ScanEngine(
        model,
        [layer],
        prep,
        options,
        channels={layer.name: (query.channel,)},
        batch_size=batch_size,
    )


def input_box(
    field: TensorField | None, input_size: tuple[int, int], y: int, x: int, channel: int
) -> tuple[int, int, int, int]:
    """A unit's exact receptive field in model-input pixels (the field at the image's
    model-input size `input_size`); a flat tensor's is the whole input."""
    if field is None or not field.spatial:
        height, width = input_size
        return (0, 0, height, width)
    return field.box(y, x, channel)
