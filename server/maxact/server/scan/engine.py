"""The layer scan engine: one pass over a dataset serves every channel of every requested layer.

The graph is pruned to the requested tensors (nothing after them runs) and ends in the
reductions the scan needs (`graph.reductions`: [N, C]-sized results, not activation maps).
Images are decoded in worker threads (`reader`; worker processes on machines with many
cores), batched into onnxruntime in this thread, and each batch's results are folded into the
reducers in a second thread while the next batch runs (`pipeline`). Per layer a
`LayerReducer` keeps top-k / bottom-k / position-mode entries and statistics for all
channels, with memory bounded by k x channels.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import onnxruntime as ort

from maxact.common.kinds import Layout
from maxact.server.data.decode import prepare
from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.data.process_reader import read_batches_in_processes, use_processes
from maxact.server.data.reader import Batch, ImageSource, Skipped, known_total, read_batches
from maxact.server.errors import ServiceError
from maxact.server.graph.reductions import (
    LayerReduction,
    Uint8Feed,
    default_opset,
    feeds_of,
    has_nan,
    plan_reduction,
    split_outputs,
)
from maxact.server.models.registry import LayerEntry, LoadedModel
from maxact.server.models.runtime import CUDA, providers_for, run_failure, run_options
from maxact.server.models.working_set import reserve_working_set, working_set_bytes
from maxact.server.ops.memory import BUDGET
from maxact.server.ops.metrics import IMAGES_SCANNED, IMAGES_SKIPPED
from maxact.server.ops.process import release_free_memory
from maxact.server.scan.binding import BoundRunner, device_batch_size
from maxact.server.scan.layer import LayerReducer, ReduceOptions
from maxact.server.scan.pipeline import Overlapped

# Per-image map size (elements) above which the CPU reduces a layer in numpy, in a second
# thread, instead of in the graph: onnxruntime's CPU ArgMax/TopK cost ~1.7 ms per image over
# ResNet-50's layer1 [256, 56, 56] (18% of its inference; numpy's argmax overlapped with the
# next batch: 0.95x plain inference vs 0.87x in the graph), while for maps of 100k elements
# and less the graph wins (no map leaves onnxruntime: 0.88-1.02x vs 0.82-1.02x).
HOST_REDUCE_ABOVE = 256 * 1024


def _elements(shape: tuple[int, ...]) -> int:
    """Elements per image of a [N, ...] tensor shape (0 when a dimension is unknown)."""
    dims = shape[1:]
    return math.prod(dims) if dims and min(dims) > 0 else 0


class EngineCancelled(Exception):
    """The scan was stopped from another thread."""


Parts = dict[str, np.ndarray]
"""One layer's outputs of a batch, by graph output name (`split_outputs`)."""

Total = int | Callable[[], int]
"""An image count for progress, or a function giving it now (images received so far)."""


@dataclass
class EngineCallbacks:
    """Called from the reduction thread, in dataset order, after the reducers saw the batch.

    `progress(done, total, failed)`: `total` is the dataset size, the images received so far
    for a stream with an unknown end, or 0 when unknown.
    """

    progress: Callable[[int, int, int], None] = lambda done, total, failed: None
    skipped: Callable[[str, str], None] = lambda image_id, reason: None
    partial: Callable[[int], None] = lambda done: None  # reducers are consistent here
    # the dataset indices just reduced (a batch) or skipped, before `progress`
    reduced: Callable[[list[int]], None] = lambda indices: None
    partial_interval: float = 0.5
    # After a batch was reduced: every image before `position` (a dataset index) is now
    # accounted for, reduced or skipped; a consistent point to checkpoint at.
    batch_done: Callable[[int], None] = lambda position: None
    # The dataset indices of a batch and their model-input (height, width), before
    # `reduced`: with per-image sizing, where a unit lies depends on it.
    sized: Callable[[list[int], tuple[int, int]], None] = lambda indices, size: None


@dataclass
class EngineOutcome:
    images_scanned: int
    images_failed: int
    seconds: float
    batch_size: int


@dataclass
class _Session:
    """One input size's session, the reductions its graph ends in, and its outputs."""

    session: ort.InferenceSession
    fixed_batch: int | None
    reductions: tuple[LayerReduction, ...]
    outputs: list[str]
    runner: BoundRunner | None
    feeds: dict[str, np.ndarray]  # the graph's run-time inputs besides the images


@dataclass
class _Counters:
    done: int = 0
    failed: int = 0
    last_index: int = -1  # the largest dataset index reduced or skipped so far
    last_partial: float = field(default_factory=time.monotonic)


class ScanEngine:
    """Scan images through the layers `layers` of `model`; reducers are in `self.reducers`."""

    def __init__(
        self,
        model: LoadedModel,
        layers: Sequence[LayerEntry],
        prep: ResolvedPreprocessing,
        options: ReduceOptions | None = None,
        classes: Sequence[str] = (),
        channels: dict[str, tuple[int, ...]] | None = None,
        batch_size: int | None = None,
        draft: bool | None = None,
        in_graph: bool | None = None,
        io_binding: bool | None = None,
        uint8_feed: bool | None = None,
    ) -> None:
        """`in_graph`: reduce inside the graph (`graph.reductions`) so only [N, C] results
        leave the session; False: every map comes back and is reduced in numpy in a second
        thread. Both give identical results (tested; a batch whose map holds a NaN is reduced
        on the host). Default: in the graph on a GPU (the maps would cross the bus) and, on
        the CPU, for maps up to HOST_REDUCE_ABOVE values per image (no map is allocated and
        handed to a competing thread; larger ones: onnxruntime's TopK costs more).
        `io_binding`: run through onnxruntime IO binding (default: on a GPU only);
        `uint8_feed`: feed uint8 pixels and normalise inside the graph (bit-identical; 4x less
        host-to-device traffic; default: on a GPU only; `run_batches` then takes uint8
        [N, H, W, 3] arrays); `batch_size` default: chosen for the device."""
        if not layers:
            raise ValueError("a scan needs at least one layer")
        self.model = model
        self.layers = list(layers)
        self.names = tuple(dict.fromkeys(layer.name for layer in layers))
        self.prep = prep
        self.options = options or ReduceOptions()
        self.classes = tuple(classes)
        self.draft = prep.fast_decode if draft is None else draft
        on_gpu = CUDA in providers_for(model.device)
        self.in_graph = True if in_graph is None else in_graph
        # on the CPU, by default, maps larger than HOST_REDUCE_ABOVE are reduced on the host
        self._large_maps_on_host = in_graph is None and not on_gpu
        self.io_binding = on_gpu if io_binding is None else io_binding
        self.uint8_feed = (on_gpu if uint8_feed is None else uint8_feed) and prep.pixels_exact
        self._feed = (
            Uint8Feed(prep.scale, prep.mean, prep.std, prep.channel_order, prep.layout)
            if self.uint8_feed
            else None
        )
        self._layers_at: dict[tuple[int, int], dict[str, LayerEntry]] = {
            prep.reference_size: {layer.name: layer for layer in self.layers}
        }
        self._channels = channels or {}
        self.reducers = self._fresh_reducers()
        self._sessions: dict[tuple[tuple[int, int], bool], _Session] = {}
        first = self._session_for(prep.reference_size)
        self.session, self.fixed_batch = first.session, first.fixed_batch
        self.reductions = first.reductions
        self.batch_size = self.fixed_batch or batch_size or device_batch_size(on_gpu)
        self.stop_event = threading.Event()
        # how long a batch waits for room in the memory budget (None: the server's bound;
        # inf: a persisted scan in the background waits until there is room or it is stopped)
        self.memory_wait: float | None = None
        self._working_sets: dict[tuple[int, int], int] = {}
        self._run_options = run_options(variable_shapes=model.input.fixed_size is None)

    def _fresh_reducers(self) -> dict[str, LayerReducer]:
        return {
            layer.name: LayerReducer(
                layer.name,
                layer.field,
                layer.shape,
                self.options,
                self.classes,
                self._channels.get(layer.name),
            )
            for layer in self.layers
        }

    def take_reducers(self) -> dict[str, LayerReducer]:
        """The reducers so far, replaced by empty ones: a worker reports the part of a shard
        scanned since its last report and goes on with the same session. Safe between runs
        and from `batch_done` (the reduction thread, between two batches)."""
        taken, self.reducers = self.reducers, self._fresh_reducers()
        return taken

    def stop(self) -> None:
        """Stop promptly: between batches, and abort a run in progress."""
        self.stop_event.set()
        self._run_options.terminate = True

    def run(
        self,
        sources: Iterable[ImageSource],
        labels: np.ndarray | None = None,
        callbacks: EngineCallbacks | None = None,
        threads: int | None = None,
        total: Total | None = None,
        processes: int | None = None,
    ) -> EngineOutcome:
        """Scan images; `labels[i]` is the class id of dataset index i (-1: none).

        `sources` is a list or an iterator of images still arriving (see `read_batches`);
        `total` defaults to `len(sources)` for a list, else 0 (unknown). Decoding runs in
        `processes` worker processes (default: on machines with many cores, for a list of file
        sources without the input cache; 0: never), else in `threads` threads.
        """
        items: Iterable[Batch | Skipped]
        if processes or (processes is None and use_processes(sources, self.prep)):
            assert isinstance(sources, list)
            items = read_batches_in_processes(
                sources,
                self.prep,
                self.batch_size,
                self.stop_event,
                processes or None,
                self.draft,
                not self.uint8_feed,
            )
        else:
            normalised = not self.uint8_feed
            prepare_one = partial(prepare, draft=self.draft, normalised=normalised)
            shape = self.prep.array_shape(normalised)
            slots = None if shape is None else (shape, np.float32 if normalised else np.uint8)
            items = read_batches(
                sources, self.prep, self.batch_size, self.stop_event, threads, prepare_one, slots
            )
        return self.run_batches(
            items, known_total(sources) if total is None else total, labels, callbacks
        )

    def run_batches(
        self,
        items: Iterable[Batch | Skipped],
        total: Total,
        labels: np.ndarray | None = None,
        callbacks: EngineCallbacks | None = None,
    ) -> EngineOutcome:
        """Scan already prepared batches (and skipped images), e.g. pre-decoded tensors."""
        callbacks = callbacks or EngineCallbacks()
        counters = _Counters()
        label_array = None if labels is None else np.asarray(labels, dtype=np.int64)
        start = time.perf_counter()
        count = total if callable(total) else lambda: total
        callbacks.progress(0, count(), 0)

        def reduce(item: tuple[Batch, tuple[LayerReduction, ...], list[Parts]] | Skipped) -> None:
            if isinstance(item, Skipped):
                counters.failed += 1
                IMAGES_SKIPPED.inc()
                callbacks.skipped(item.image_id, item.reason)
                callbacks.reduced([item.index])
                counters.last_index = max(counters.last_index, item.index)
            else:
                batch, reductions, parts = item
                indices = np.asarray(batch.indices, dtype=np.int64)
                batch_labels = None if label_array is None else label_array[indices]
                size = self._size_of(batch.array)
                layers = self._layers_for(size)
                callbacks.sized(batch.indices, size)
                for reduction, part in zip(reductions, parts, strict=True):
                    self.reducers[reduction.tensor].update_reduced(
                        reduction, part, indices, batch_labels, layers[reduction.tensor].field
                    )
                counters.done += len(indices)
                counters.last_index = max(counters.last_index, int(indices.max()))
                IMAGES_SCANNED.inc(len(indices))
                callbacks.reduced(batch.indices)
            callbacks.progress(counters.done, count(), counters.failed)
            # a checkpoint point only when nothing past it was reduced yet: batches by size
            # can run ahead of an image still waiting for its batch (resume must not
            # reduce an image twice)
            if not isinstance(item, Skipped) and counters.last_index < item[0].position:
                callbacks.batch_done(item[0].position)
            now = time.monotonic()
            if now - counters.last_partial >= callbacks.partial_interval:
                counters.last_partial = now
                callbacks.partial(counters.done)

        try:
            Overlapped(reduce).run(self._inferred(items))
        finally:
            if self.model.input.fixed_size is None:
                release_free_memory()  # buffers of this scan's sizes: back to the system
        if self.stop_event.is_set():
            raise EngineCancelled()
        return EngineOutcome(
            counters.done, counters.failed, time.perf_counter() - start, self.batch_size
        )

    def _inferred(
        self, items: Iterable[Batch | Skipped]
    ) -> Iterator[tuple[Batch, tuple[LayerReduction, ...], list[Parts]] | Skipped]:
        try:
            for item in items:
                if self.stop_event.is_set():
                    return
                yield item if isinstance(item, Skipped) else (item, *self._infer(item.array))
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a reader: stop its decode threads now, not at GC
                close()

    def _size_of(self, array: np.ndarray) -> tuple[int, int]:
        """The model-input (height, width) of a batch [B, ...] in the prep's layout (uint8
        pixels are always [B, H, W, 3])."""
        if self.prep.layout == Layout.NCHW and not self.uint8_feed:
            return int(array.shape[2]), int(array.shape[3])
        return int(array.shape[1]), int(array.shape[2])

    def _session_for(self, size: tuple[int, int], host: bool = False) -> _Session:
        """The session for one input size; `host`: returning the maps (no in-graph reductions).
        One onnxruntime session per graph serves every size, reused from the engine's other
        sizes even when the cache evicted it: a rebuild would be a second copy of it."""
        in_graph = self.in_graph and not host
        found = self._sessions.get((size, in_graph))
        if found is None:
            reductions = (
                self._plan(size)
                if in_graph
                else tuple(LayerReduction(name, "host") for name in self.names)
            )
            graph = [r.graph_key for r in reductions]
            same = [
                known
                for (_, known_in_graph), known in self._sessions.items()
                if known_in_graph == in_graph and [r.graph_key for r in known.reductions] == graph
            ]
            session, fixed_batch = (
                (same[0].session, same[0].fixed_batch)
                if same
                else self.model.scan_session(
                    self.names, size, reductions if in_graph else (), self._feed
                )
            )
            names = [name for r in reductions for name in r.outputs]
            feeds = feeds_of(reductions) if in_graph else {}
            runner = (
                BoundRunner(session, self.model.input.name, names, feeds=feeds)
                if self.io_binding
                else None
            )
            found = _Session(session, fixed_batch, reductions, names, runner, feeds)
            self._sessions[(size, in_graph)] = found
        return found

    def _plan(self, size: tuple[int, int]) -> tuple[LayerReduction, ...]:
        """The reductions at `size`; whether a layer's map is large enough to reduce on the
        host is decided at the reference size, so every image size of a request (and every
        request with the same geometry) shares one session per layer set."""
        shapes = self.model.view(size).shapes
        reference = self.model.view(self.prep.reference_size).shapes
        opset = default_opset(self.model.proto)
        layers = self._layers_for(size)
        return tuple(
            LayerReduction(name, "host")
            if self._large_maps_on_host
            and _elements(reference.get(name, shapes.get(name, ()))) > HOST_REDUCE_ABOVE
            else plan_reduction(
                name,
                layers[name].field,
                len(shapes.get(name, ())),
                self.reducers[name].channels,
                self.options.unit,
                # the maps out too: position mode, and layers that keep their entries' maps
                self.options.position
                or self.options.position_bottom
                or name in self.options.keep_maps,
                opset,
            )
            for name in self.names
        )

    def layer_at(self, size: tuple[int, int], name: str) -> LayerEntry:
        """A scanned layer's catalogue row at a model-input size."""
        return self._layers_for(size)[name]

    def _layers_for(self, size: tuple[int, int]) -> dict[str, LayerEntry]:
        """The layers' catalogue rows (shapes, receptive fields) at a model-input size; a
        size the model cannot take fails here with the reason (see `LoadedModel.layer`)."""
        found = self._layers_at.get(size)
        if found is None:
            found = self._layers_at[size] = {
                name: self.model.layer(size, name) for name in self.names
            }
        return found

    def _infer(self, array: np.ndarray) -> tuple[tuple[LayerReduction, ...], list[Parts]]:
        """The batch's reductions and, per layer, their outputs by name; a batch whose map
        holds a NaN runs again with the maps out, so numpy reduces it (onnxruntime's TopK
        passes over a NaN)."""
        size = self._size_of(array)
        if self.prep.fixed_size is None:
            self._layers_for(size)  # a size the model cannot take fails here, saying why
        found = self._session_for(size)
        parts = split_outputs(found.reductions, self._run(found, array))
        if self.in_graph and has_nan(found.reductions, parts):
            found = self._session_for(size, host=True)
            parts = split_outputs(found.reductions, self._run(found, array))
        return found.reductions, parts

    def _run(self, found: _Session, array: np.ndarray) -> list[np.ndarray]:
        """`found`'s outputs for `array`, split or padded to a fixed batch size, and split
        where the batch's working set would not fit the memory budget at once."""
        fixed_batch = found.fixed_batch
        count = array.shape[0]
        size = self._size_of(array)
        per_image = self._working_set(size)
        fits = max(1, BUDGET.work_bytes // max(1, per_image))
        if fixed_batch is None and count > fits:
            parts = [self._run(found, array[i : i + fits]) for i in range(0, count, fits)]
            return [np.concatenate(column) for column in zip(*parts, strict=True)]
        if fixed_batch is not None and count != fixed_batch:
            if count > fixed_batch:
                parts = [
                    self._run(found, array[i : i + fixed_batch])
                    for i in range(0, count, fixed_batch)
                ]
                return [np.concatenate(column) for column in zip(*parts, strict=True)]
            padding = np.zeros((fixed_batch - count, *array.shape[1:]), array.dtype)
            array = np.concatenate([array, padding])
        try:
            with reserve_working_set(
                self.model,
                array.shape[0] * per_image,
                f"a batch of {array.shape[0]} image(s) at {size[0]}x{size[1]} through model "
                f"{self.model.name!r}",
                self.stop_event,
                self.memory_wait,
            ):
                outputs = self._run_session(found, array)
        except ServiceError:
            raise
        except Exception as exc:
            if self.stop_event.is_set():
                raise EngineCancelled() from None
            failure = run_failure(self.model.name, exc)
            if failure is not None:
                raise failure from None
            raise
        return [np.asarray(output)[:count] for output in outputs]

    def _working_set(self, size: tuple[int, int]) -> int:
        """Estimated working memory per image of a run at `size` (see `working_set`)."""
        found = self._working_sets.get(size)
        if found is None:
            found = self._working_sets[size] = working_set_bytes(self.model, size, self.names)
        return found

    def _run_session(self, found: _Session, array: np.ndarray) -> list[np.ndarray]:
        runner = found.runner
        outputs: list[np.ndarray] = self.model.sessions.first_run(
            found.session,
            (lambda: runner.run(array, self._run_options))
            if runner is not None
            else lambda: found.session.run(
                found.outputs,
                {self.model.input.name: array, **found.feeds},
                self._run_options,
            ),
        )
        return outputs
