"""Scan a dataset for one neuron: batched inference on the pruned graph, then running top-k.

Channel and flat-index queries run on the layer scan engine (`scan.engine`, restricted to the
one channel); a single unit (C, y, x) keeps its own small loop here.

Modes (DESIGN §4): `image` keeps at most one entry per image (the channel's max over space,
or the single unit's value; `bottom` ranks the same per-image responses ascending);
`position` keeps the best units anywhere, suppressing units whose receptive-field boxes
overlap a better unit of the same image; flat tensors rank an index.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import onnxruntime as ort

from .models import LayerEntry, LoadedModel
from .preprocess import ResolvedPreprocessing
from .reader import Batch, ImageSource, Skipped, known_total, read_batches
from .reducers import Entry, RunningTopK
from .rf import TensorField
from .scan.engine import EngineCallbacks, EngineCancelled, ScanEngine, Total
from .scan.layer import ReduceOptions


@dataclass(frozen=True)
class NeuronQuery:
    layer: str
    channel: int
    unit: tuple[int, int] | None = None
    k: int = 9
    mode: str = "image"  # "image" | "position"
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


def batch_size_for(model: LoadedModel, requested: int = 16) -> int:
    """Models exported with a fixed batch run their batch at a time (batch-1 models that batch
    correctly once made symbolic run `requested`, see `LoadedModel.scan_session`)."""
    fixed = model.input.fixed_batch
    return fixed if fixed is not None else requested


class NeuronScan:
    """One pass over images for one neuron; thread-safe to stop from another thread."""

    def __init__(
        self,
        model: LoadedModel,
        layer: LayerEntry,
        query: NeuronQuery,
        prep: ResolvedPreprocessing,
        batch_size: int = 16,
    ) -> None:
        self.model = model
        self.layer = layer
        self.query = query
        self.prep = prep
        self._field = layer.field
        self._engine: ScanEngine | None = None
        self._ids: HeldWhileNeeded[str] = HeldWhileNeeded()
        if query.unit is None:
            self._engine = _engine_for(model, layer, query, prep, batch_size)
            self.stop_event = self._engine.stop_event
            self.batch_size = self._engine.batch_size
            return
        self._session, fixed = model.scan_session((layer.name,), prep.input_size)
        self.batch_size = fixed or batch_size
        self.stop_event = threading.Event()
        self._run_options = ort.RunOptions()
        self._reducer = RunningTopK(1, query.k, largest=not query.bottom)

    def stop(self) -> None:
        """Stop promptly: between batches, and abort a run in progress."""
        if self._engine is not None:
            self._engine.stop()
            return
        self.stop_event.set()
        self._run_options.terminate = True

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
        sources = self._recording(sources)
        if self._engine is not None:
            return self._run_engine(self._engine, sources, callbacks, total)
        count = total if callable(total) else lambda: total
        done = failed = 0
        last_partial = time.monotonic()
        callbacks.progress(0, count(), 0)
        for item in read_batches(sources, self.prep, self.batch_size, self.stop_event):
            if self.stop_event.is_set():
                break
            if isinstance(item, Skipped):
                failed += 1
                callbacks.skipped(item.image_id, item.reason)
                self._reduced([item.index], callbacks)
                callbacks.progress(done, count(), failed)
                continue
            self._reduce(item, self._infer(item))
            done += len(item.indices)
            self._reduced(item.indices, callbacks)
            callbacks.progress(done, count(), failed)
            if time.monotonic() - last_partial >= callbacks.partial_interval:
                last_partial = time.monotonic()
                callbacks.partial(self.hits(), done)
        if self.stop_event.is_set():
            raise ScanCancelled()
        return ScanOutcome(self.hits(), done, failed, cancelled=False)

    def _recording(self, sources: Iterable[ImageSource]) -> Iterator[ImageSource]:
        """Remember each image's id as the reader takes it (forgotten once out of the top-k)."""
        for source in sources:
            self._ids.add(source.index, source.image_id)
            yield source

    def _reduced(self, indices: list[int], callbacks: ScanCallbacks) -> None:
        self._ids.reduced(indices, self.kept_images)
        callbacks.reduced(indices)

    def _run_engine(
        self,
        engine: ScanEngine,
        sources: Iterable[ImageSource],
        callbacks: ScanCallbacks,
        total: Total,
    ) -> ScanOutcome:
        try:
            outcome = engine.run(
                sources,
                total=total,
                callbacks=EngineCallbacks(
                    reduced=lambda indices: self._reduced(indices, callbacks),
                    progress=callbacks.progress,
                    skipped=callbacks.skipped,
                    partial=lambda done: callbacks.partial(self.hits(), done),
                    partial_interval=callbacks.partial_interval,
                ),
            )
        except EngineCancelled:
            raise ScanCancelled() from None
        return ScanOutcome(self.hits(), outcome.images_scanned, outcome.images_failed, False)

    def _infer(self, batch: Batch) -> np.ndarray:
        try:
            (output,) = self._session.run(
                [self.layer.name], {self.model.input.name: batch.array}, self._run_options
            )
        except Exception:
            if self.stop_event.is_set():
                raise ScanCancelled() from None
            raise
        return np.asarray(output)

    def _reduce(self, batch: Batch, output: np.ndarray) -> None:
        images = np.asarray(batch.indices, dtype=np.int64)
        field = self._field
        query = self.query
        if field is None or not field.spatial:
            values = output.reshape(output.shape[0], -1)[:, query.channel]
            zeros = np.zeros((len(images), 1), dtype=np.int64)
            self._reducer.update(values[:, None], images, zeros, zeros)
            return
        maps = channel_maps(output, field, query.channel)  # [B, H, W]
        if query.unit is not None:
            y, x = query.unit
            ys = np.full((len(images), 1), y, dtype=np.int64)
            xs = np.full((len(images), 1), x, dtype=np.int64)
            self._reducer.update(maps[:, y, x][:, None], images, ys, xs)
        elif query.mode == "position":
            for row, image in enumerate(images):
                scores, ys, xs = self._suppressed_candidates(maps[row])
                self._reducer.update(
                    scores[:, None], np.full(len(scores), image), ys[:, None], xs[:, None]
                )
        else:
            flat = maps.reshape(len(images), -1)
            best = np.argmax(flat, axis=1)  # the channel's response; bottom ranks it ascending
            scores = flat[np.arange(len(images)), best]
            width = maps.shape[2]
            self._reducer.update(
                scores[:, None], images, (best // width)[:, None], (best % width)[:, None]
            )

    def _suppressed_candidates(
        self, channel_map: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy suppression inside one image: best units first, skip overlapping fields."""
        assert self._field is not None
        cap = (
            self.query.k
            if self.query.per_image_cap <= 0
            else min(self.query.k, self.query.per_image_cap)
        )
        flat = channel_map.reshape(-1)
        order = np.argsort(flat if self.query.bottom else -flat, kind="stable")
        width = channel_map.shape[1]
        chosen: list[int] = []
        boxes: list[tuple[int, int, int, int]] = []
        for position in order:
            y, x = divmod(int(position), width)
            box = self._field.box(y, x, self.query.channel)
            if any(_overlaps(box, other) for other in boxes):
                continue
            chosen.append(int(position))
            boxes.append(box)
            if len(chosen) == cap:
                break
        picked = np.asarray(chosen, dtype=np.int64)
        return flat[picked], picked // width, picked % width

    @property
    def ids_held(self) -> int:
        """How many image ids the scan holds now (ranked or in flight)."""
        return len(self._ids)

    def kept_images(self) -> set[int]:
        """Indices of the images the ranking holds now (call where the reducer is consistent:
        in the progress callback, or after the scan)."""
        if self._engine is not None:
            reducer = self._engine.reducers[self.layer.name]
            images = reducer.top_images(_kind(self.query, reducer.spatial))
        else:
            images = self._reducer.images()
        return {int(index) for index in np.asarray(images).ravel() if index >= 0}

    def hits(self) -> list[Hit]:
        if self._engine is not None:
            reducer = self._engine.reducers[self.layer.name]
            entries = reducer.entries(0, _kind(self.query, reducer.spatial))
            return [self._hit(rank, entry) for rank, entry in enumerate(entries, start=1)]
        return [
            self._hit(rank, entry) for rank, entry in enumerate(self._reducer.entries(0), start=1)
        ]

    def _image_id(self, index: int) -> str:
        image_id = self._ids.get(index)
        if image_id is None:  # never: ranked images stay held
            raise LookupError(f"the id of ranked image {index} was released")
        return image_id

    def _hit(self, rank: int, entry: Entry) -> Hit:
        field = self._field
        if field is None or not field.spatial:
            height, width = self.prep.input_size
            box = (0, 0, height, width)
        else:
            box = field.box(entry.y, entry.x, self.query.channel)
        return Hit(
            rank,
            entry.image,
            self._image_id(entry.image),
            entry.score,
            (entry.y, entry.x),
            self.query.channel,
            box,
        )


def _kind(query: NeuronQuery, spatial: bool) -> str:
    """Which of the engine's rankings answers the query (flat tensors have no positions)."""
    position = "position" if query.mode == "position" and spatial else ""
    if query.bottom:
        return f"{position}_bottom" if position else "bottom"
    return position or "top"


def _engine_for(
    model: LoadedModel,
    layer: LayerEntry,
    query: NeuronQuery,
    prep: ResolvedPreprocessing,
    batch_size: int,
) -> ScanEngine:
    """An engine restricted to the query's channel, keeping only the ranking it asks for."""
    kind = _kind(query, layer.field is not None and layer.field.spatial)
    options = ReduceOptions(
        k=query.k,
        bottom=kind == "bottom",
        position=kind == "position",
        position_bottom=kind == "position_bottom",
        per_image_cap=query.per_image_cap,
    )
    return ScanEngine(
        model,
        [layer],
        prep,
        options,
        channels={layer.name: (query.channel,)},
        batch_size=batch_size,
    )


def channel_maps(output: np.ndarray, field: TensorField, channel: int) -> np.ndarray:
    """[B, H, W] map of one channel, whatever the tensor's layout."""
    moved = np.moveaxis(
        output, (field.channel_axis, field.height_axis, field.width_axis), (1, 2, 3)
    )
    return moved[:, channel]


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
