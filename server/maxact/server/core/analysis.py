"""Questions about finished scans answered from the store (no inference): a layer's class
answer, one class's channels with their patches, how two scans differ, a model's class names.

Blocking functions: a face runs them in a worker thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

from maxact.common.class_answer import ClassAnswer, ClassChannel
from maxact.common.kinds import TopKKind
from maxact.common.statistics import LayerStatistics
from maxact.server.analysis.classes import LayerClassAnswer, class_answer
from maxact.server.analysis.compare import ChannelChange, compare_channels
from maxact.server.core.neurons import (
    StoredNeuron,
    damaged_statistics,
    finished_scan,
    layer_statistics,
    stored_neuron,
)
from maxact.server.errors import Code, ServiceError, failed_precondition, invalid_argument
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.jobs.store import ScanRecord
from maxact.server.models.class_names import class_names
from maxact.server.patches.render import RenderOptions

DEFAULT_SELECTIVE = 0.5
DEFAULT_TOP = 10
MAX_TOP = 1000
ANSWERS_CACHED = 32  # class answers kept (per scan, layer, threshold, top)
# a reply's bound, under the gRPC message bound (64 MiB) with room for the rest of the reply
MAX_REPLY_BYTES = 60 * 2**20


def _estimated_reply_bytes(channels: int, hits: int, patch_size: int) -> int:
    """What a class's patches weigh before rendering: every patch fits in patch_size^2
    pixels of 3 bytes (PNG usually compresses, so this is the uncompressed bound)."""
    return channels * hits * patch_size * patch_size * 3


def _reply_too_large(what: str) -> ServiceError:
    return ServiceError(
        Code.RESOURCE_EXHAUSTED,
        "REPLY_TOO_LARGE",
        f"GetClassChannels would return {what}, over the bound of {MAX_REPLY_BYTES // 2**20} "
        "MiB per reply; ask for fewer channels (top), fewer patches (k) or a smaller patch_size",
        {"bound": str(MAX_REPLY_BYTES)},
    )


@dataclass(frozen=True)
class ClassAnswerReport:
    """The class answer of one layer of a finished scan."""

    scan: ScanRecord
    layer: str
    images_scanned: int
    answer: LayerClassAnswer


@dataclass(frozen=True)
class ChannelPatches:
    channel: ClassChannel
    neuron: StoredNeuron


@dataclass(frozen=True)
class ClassChannelsReport:
    """One class's strongest channels, each with its top images' patches."""

    scan: ScanRecord
    found: ClassAnswer
    channels: list[ChannelPatches]


@dataclass(frozen=True)
class Comparison:
    """Two scans of one dataset, channel by channel (most changed first)."""

    scan_a: ScanRecord
    scan_b: ScanRecord
    layer: str
    k: int
    channels: list[ChannelChange]


class Analysis:
    """The analysis operations over the scans `jobs` holds."""

    def __init__(self, jobs: ScanJobs) -> None:
        self.jobs = jobs
        # a finished scan's statistics never change: its class answers are computed once
        self._answers: LRUCache[tuple[str, str, float, int], ClassAnswerReport] = LRUCache(
            maxsize=ANSWERS_CACHED
        )
        self._answers_lock = threading.Lock()

    def class_answer(
        self, scan: str, layer: str, threshold: float | None, top: int
    ) -> ClassAnswerReport:
        """`threshold` None: the default selectivity threshold; `top` 0: the default."""
        threshold = DEFAULT_SELECTIVE if threshold is None else threshold
        if not 0.0 <= threshold <= 1.0:
            raise invalid_argument(
                "INVALID_THRESHOLD", f"the selectivity threshold must be in 0..1, got {threshold}"
            )
        top = _check_top(top)
        record = finished_scan(self.jobs, scan)
        stats = layer_statistics(self.jobs, record, layer)  # read each time: the row decides
        _class_means(record, stats)
        key = (record.id, layer, threshold, top)
        with self._answers_lock:
            cached = self._answers.get(key)
        if cached is not None:
            return ClassAnswerReport(record, layer, stats.images, cached.answer)
        report = answer_of(record, layer, stats, threshold, top)
        with self._answers_lock:
            self._answers[key] = report
        return report

    def class_channels(
        self,
        scan: str,
        layer: str,
        class_name: str,
        top: int,
        k: int,
        render: RenderOptions,
    ) -> ClassChannelsReport:
        """The class's top channels (by contrast) with the patches of each one's top k,
        rendered with `render` (validated by the caller)."""
        report = self.class_answer(scan, layer, None, top)
        record = report.scan
        found = next((c for c in report.answer.classes if c.name == class_name), None)
        if found is None:
            raise invalid_argument(
                "CLASS_NOT_FOUND",
                f"scan '{record.name}' has no class {class_name[:200]!r} "
                f"(its classes: {[c.name for c in report.answer.classes][:20]})",
                class_name=class_name[:200],
            )
        patch_size = render.patch_size
        hits = min(k or record.k, record.k)
        estimate = _estimated_reply_bytes(len(found.top_channels), hits, patch_size)
        if estimate > MAX_REPLY_BYTES:  # refused before a single patch is rendered
            raise _reply_too_large(
                f"{len(found.top_channels)} channels x {hits} patches of "
                f"{patch_size}x{patch_size} pixels (~{estimate // 2**20} MiB)"
            )
        channels, rendered = [], 0
        for channel in found.top_channels:
            neuron = stored_neuron(self.jobs, record.name, layer, channel.channel, k, False, render)
            channels.append(ChannelPatches(channel, neuron))
            rendered += sum(len(patch.png) for patch in neuron.patches)
            if rendered > MAX_REPLY_BYTES:  # patch_size 0: each patch its own size
                raise _reply_too_large(
                    f"more than {MAX_REPLY_BYTES // 2**20} MiB after {len(channels)} of "
                    f"{len(found.top_channels)} channels"
                )
        return ClassChannelsReport(record, found, channels)

    def compare(self, scan_a: str, scan_b: str, layer: str) -> Comparison:
        """How two finished scans of the same images differ in `layer`."""
        a = finished_scan(self.jobs, scan_a)
        b = finished_scan(self.jobs, scan_b)
        if a.dataset != b.dataset or self.jobs.store.image_ids(a.id) != self.jobs.store.image_ids(
            b.id
        ):
            raise failed_precondition(
                "DATASET_MISMATCH",
                f"scans '{a.name}' (dataset {a.dataset!r}) and '{b.name}' (dataset "
                f"{b.dataset!r}) did not scan the same images; compare needs one dataset",
            )
        stats_a = layer_statistics(self.jobs, a, layer)
        stats_b = layer_statistics(self.jobs, b, layer)
        shape_a, shape_b = self._shape(a, layer), self._shape(b, layer)
        if shape_a != shape_b:
            raise invalid_argument(
                "LAYER_SHAPE_MISMATCH",
                f"layer {layer!r} has shape {list(shape_a)} in model {a.model!r} but "
                f"{list(shape_b)} in model {b.model!r}; compare needs the same shape",
                layer=layer,
            )
        channels = len(stats_a.mean)
        k = min(a.k, b.k, max(stats_a.images, 1))
        top_a = [self._top_images(a, layer, c, k) for c in range(channels)]
        top_b = [self._top_images(b, layer, c, k) for c in range(channels)]
        changes = compare_channels(
            top_a,
            top_b,
            k,
            (stats_a.firing_rate, stats_b.firing_rate),
            (stats_a.mean, stats_b.mean),
        )
        return Comparison(a, b, layer, k, changes)

    def class_names(self, model: str) -> tuple[str, list[str]]:
        """(the layer whose channels are the classes, the class names) of a model."""
        return class_names(self.jobs.models.get(model))

    def _shape(self, record: ScanRecord, layer: str) -> tuple[int, ...]:
        _, _, layers = self.jobs.prepare(record)
        return next(entry.shape for entry in layers if entry.name == layer)

    def _top_images(self, record: ScanRecord, layer: str, channel: int, k: int) -> list[str]:
        """The channel's k best distinct images (position mode may list an image twice)."""
        kind = TopKKind.of(record.mode, bottom=False)
        rows = self.jobs.store.topk_rows(record.id, layer, channel, kind, record.k)
        return list(dict.fromkeys(row.image for row in rows))[:k]


def answer_of(
    record: ScanRecord,
    layer: str,
    stats: LayerStatistics,
    threshold: float = DEFAULT_SELECTIVE,
    top: int = DEFAULT_TOP,
) -> ClassAnswerReport:
    """The class answer of `stats`: a finished scan's, or a running one's so far (its
    checkpoint's statistics; never cached, they change)."""
    names, images, m = _class_means(record, stats)
    try:
        answer = class_answer(
            names,
            images,
            m,
            np.asarray(stats.firing_rate, dtype=np.float64),
            np.asarray(stats.dead, dtype=bool),
            threshold,
            top,
        )
    except (IndexError, TypeError, ValueError) as exc:
        raise damaged_statistics(record.id, layer, exc) from None
    return ClassAnswerReport(record, layer, stats.images, answer)


def not_labelled(record: ScanRecord) -> ServiceError:
    """A class question about a scan of a dataset without labels."""
    return failed_precondition(
        "SCAN_NOT_LABELLED",
        f"scan '{record.name}' is of dataset {record.dataset!r}, which has no labels "
        "(class subfolders or a labels.csv with path,label at its root)",
        scan=record.id,
    )


def _class_means(
    record: ScanRecord, stats: LayerStatistics
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(class names, images per class [K], m [K, C]) of the classes with at least one
    scanned image."""
    if not stats.classes:
        raise not_labelled(record)
    if not stats.labelled or stats.class_mean_clipped is None or stats.class_images is None:
        raise failed_precondition(
            "SCAN_STATISTICS_OUTDATED",
            f"scan '{record.name}' was made by an older server without clipped class "
            "means; scan the dataset again",
            scan=record.id,
        )
    rows = [
        (name, images, row)
        for name, images, row in zip(
            stats.classes, stats.class_images, stats.class_mean_clipped, strict=True
        )
        if all(v is not None for v in row)
    ]
    if len(rows) < 2:
        raise failed_precondition(
            "TOO_FEW_CLASSES",
            f"scan '{record.name}' has images of {len(rows)} class(es); class questions "
            "need at least two",
            scan=record.id,
        )
    return (
        [name for name, _, _ in rows],
        np.asarray([images for _, images, _ in rows]),
        np.asarray([row for _, _, row in rows], dtype=np.float64),
    )


def _check_top(top: int) -> int:
    top = top or DEFAULT_TOP
    if not 0 < top <= MAX_TOP:
        raise invalid_argument("INVALID_TOP", f"top must be in 1..{MAX_TOP}, got {top}")
    return top
