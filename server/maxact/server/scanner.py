"""Scan a dataset for one neuron: batched inference on the pruned graph, then running top-k.

Modes (DESIGN §4): `image` keeps at most one entry per image (the channel's max over space,
or the single unit's value; `bottom` ranks the same per-image responses ascending);
`position` keeps the best units anywhere, suppressing units whose receptive-field boxes
overlap a better unit of the same image; flat tensors rank an index.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .models import LayerEntry, LoadedModel
from .preprocess import ResolvedPreprocessing
from .reader import Batch, ImageSource, Skipped, read_batches
from .reducers import Entry, RunningTopK
from .rf import TensorField


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


def batch_size_for(model: LoadedModel, requested: int = 16) -> int:
    """Models exported with a fixed batch run one image (or their batch) at a time."""
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
        self.batch_size = batch_size_for(model, batch_size)
        self.stop_event = threading.Event()
        self._run_options = ort.RunOptions()
        self._session = model.session((layer.name,))
        self._field = layer.field
        self._reducer = RunningTopK(1, query.k, largest=not query.bottom)
        self._ids: dict[int, str] = {}

    def stop(self) -> None:
        """Stop promptly: between batches, and abort a run in progress."""
        self.stop_event.set()
        self._run_options.terminate = True

    def run(self, sources: list[ImageSource], callbacks: ScanCallbacks) -> ScanOutcome:
        total = len(sources)
        done = failed = 0
        last_partial = time.monotonic()
        callbacks.progress(0, total, 0)
        for item in read_batches(sources, self.prep, self.batch_size, self.stop_event):
            if self.stop_event.is_set():
                break
            if isinstance(item, Skipped):
                failed += 1
                callbacks.skipped(item.image_id, item.reason)
                callbacks.progress(done, total, failed)
                continue
            self._reduce(item, self._infer(item))
            done += len(item.indices)
            callbacks.progress(done, total, failed)
            if time.monotonic() - last_partial >= callbacks.partial_interval:
                last_partial = time.monotonic()
                callbacks.partial(self.hits(), done)
        if self.stop_event.is_set():
            raise ScanCancelled()
        return ScanOutcome(self.hits(), done, failed, cancelled=False)

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
        for index, image_id in zip(batch.indices, batch.ids, strict=True):
            self._ids[index] = image_id
        images = np.asarray(batch.indices, dtype=np.int64)
        field = self._field
        query = self.query
        if field is None or not field.spatial:
            values = output.reshape(output.shape[0], -1)[:, query.channel]
            zeros = np.zeros((len(images), 1), dtype=np.int64)
            self._reducer.update(values[:, None], images, zeros, zeros)
            self._forget_unkept()
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
        self._forget_unkept()

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

    def _forget_unkept(self) -> None:
        """Keep ids only for images still in the top-k, so memory stays bounded by k."""
        if len(self._ids) > 4 * self.query.k + 4 * self.batch_size:
            kept = {entry.image for entry in self._reducer.entries(0)}
            self._ids = {index: self._ids[index] for index in kept}

    def hits(self) -> list[Hit]:
        return [
            self._hit(rank, entry) for rank, entry in enumerate(self._reducer.entries(0), start=1)
        ]

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
            self._ids[entry.image],
            entry.score,
            (entry.y, entry.x),
            self.query.channel,
            box,
        )


def channel_maps(output: np.ndarray, field: TensorField, channel: int) -> np.ndarray:
    """[B, H, W] map of one channel, whatever the tensor's layout."""
    moved = np.moveaxis(
        output, (field.channel_axis, field.height_axis, field.width_axis), (1, 2, 3)
    )
    return moved[:, channel]


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
