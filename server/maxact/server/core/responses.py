"""Questions answered from a finished scan's per-image responses matrix, without running the
model: a channel's histogram, its quantile examples, per-channel labels, similar channels,
and the matrix itself in blocks.

Blocking functions: a face runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from maxact.common.defaults import LABEL_AUC
from maxact.server.analysis.responses import (
    ChannelLabel,
    channel_labels,
    column,
    histogram,
    quantile_examples,
    similar_channels,
)
from maxact.server.core.analysis import not_labelled
from maxact.server.core.neurons import finished_scan
from maxact.server.errors import Code, ServiceError, failed_precondition, invalid_argument, shown
from maxact.server.jobs.responses_files import ResponsesLayout
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.jobs.store import ScanRecord
from maxact.server.scan.reducers import check_k

DEFAULT_BINS = 50
MAX_BINS = 10_000
DEFAULT_SIMILAR = 10
MAX_SIMILAR = 1000
# an exported block holds at most this many values (1 MiB of float32) and rows (their ids),
# so a message stays under gRPC's default 4 MiB limit of other-language clients
EXPORT_VALUES = 1 << 18
EXPORT_ROWS = 8192


@dataclass(frozen=True)
class KeptResponses:
    """A finished scan's responses matrix of one layer (read-only memory map)."""

    record: ScanRecord
    layout: ResponsesLayout
    matrix: np.ndarray

    def check_channel(self, channel: int) -> int:
        channels = self.matrix.shape[1]
        if not 0 <= channel < channels:
            raise invalid_argument(
                "CHANNEL_OUT_OF_RANGE",
                f"channel {channel} is out of range: the layer has {channels} channels "
                f"(valid: 0..{channels - 1})",
                channel=str(channel),
            )
        return channel


@dataclass(frozen=True)
class Histogram:
    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class QuantileAnswer:
    """The quantile's value and the images nearest it: (rank, image id, response)."""

    record: ScanRecord
    value: float
    examples: list[tuple[int, str, float]]
    images_scanned: int


@dataclass(frozen=True)
class ResponsesBlock:
    images: int
    channels: int
    first: int
    image_ids: list[str]
    values: bytes  # little-endian float32, row-major


def kept_responses(jobs: ScanJobs, scan: str, layer: str) -> KeptResponses:
    """The responses matrix of `layer` in finished scan `scan`; RESPONSES_NOT_KEPT when the
    scan kept none (say how to get them), LAYER_NOT_FOUND when it did not scan the layer."""
    record = finished_scan(jobs, scan)
    if layer not in record.layers:
        raise invalid_argument(
            "LAYER_NOT_FOUND",
            f"scan '{record.name}' did not scan layer {shown(layer)} "
            f"(it scanned {list(record.layers)})",
            layer=layer[:200],
        )
    layout = jobs.responses_layout(record.id)
    if layout is None or layer not in layout.layers:
        raise failed_precondition(
            "RESPONSES_NOT_KEPT",
            f"scan '{record.name}' did not keep per-image responses (made before they were "
            "kept, with --responses off, or larger than the server's --max-responses-mb): "
            f"scan again with 'maxact scan create ... --responses on'",
            scan=record.id,
        )
    try:
        matrix = jobs.responses.matrix(record.id, layout, layer)
    except (OSError, ValueError) as exc:
        raise failed_precondition(
            "RESPONSES_DAMAGED",
            f"the per-image responses of scan '{record.name}' cannot be read "
            f"({type(exc).__name__}); scan again",
            scan=record.id,
        ) from None
    if matrix.shape != (layout.images, layout.layers[layer][0]):
        raise failed_precondition(
            "RESPONSES_DAMAGED",
            f"the per-image responses of scan '{record.name}' have shape {matrix.shape}, "
            f"expected {(layout.images, layout.layers[layer][0])}; scan again",
            scan=record.id,
        )
    return KeptResponses(record, layout, matrix)


def response_histogram(
    jobs: ScanJobs, scan: str, layer: str, channel: int, bins: int = 0
) -> Histogram:
    return response_histograms(jobs, scan, layer, [channel], bins)[channel]


def response_histograms(
    jobs: ScanJobs, scan: str, layer: str, channels: list[int], bins: int = 0
) -> dict[int, Histogram]:
    """Each of `channels`' histogram (numpy's rule), the matrix opened once (a page's rows)."""
    bins = bins or DEFAULT_BINS
    if not 0 < bins <= MAX_BINS:
        raise invalid_argument("BINS_OUT_OF_RANGE", f"bins must be in 1..{MAX_BINS}, got {bins}")
    kept = kept_responses(jobs, scan, layer)
    found = {}
    for channel in channels:
        edges, counts = histogram(column(kept.matrix, kept.check_channel(channel)), bins)
        found[channel] = Histogram([float(e) for e in edges], [int(c) for c in counts])
    return found


def response_quantile(
    jobs: ScanJobs, scan: str, layer: str, channel: int, quantile: float, k: int = 0
) -> QuantileAnswer:
    """The k images whose response is nearest the channel's `quantile` (ties: earlier)."""
    if not 0.0 <= quantile <= 1.0:
        raise invalid_argument(
            "QUANTILE_OUT_OF_RANGE", f"quantile must be in [0, 1], got {quantile}"
        )
    kept = kept_responses(jobs, scan, layer)
    k = check_k(k or kept.record.k)
    values = column(kept.matrix, kept.check_channel(channel))
    value, images, scores = quantile_examples(values, quantile, k)
    ids = jobs.store.image_ids(kept.record.id)
    examples = [
        (rank, ids[int(image)], float(score))
        for rank, (image, score) in enumerate(zip(images, scores, strict=True), start=1)
    ]
    return QuantileAnswer(kept.record, value, examples, int(np.isfinite(values).sum()))


def response_labels(
    jobs: ScanJobs, scan: str, layer: str, channels: list[int] | None = None
) -> list[ChannelLabel]:
    """Per channel (all, or `channels`), the class its responses separate best."""
    kept = kept_responses(jobs, scan, layer)
    wanted = sorted(set(channels)) if channels else list(range(kept.matrix.shape[1]))
    for channel in wanted:
        kept.check_channel(channel)
    inputs = jobs.labelled_images(kept.record)
    if not inputs.classes:
        raise not_labelled(kept.record)
    return channel_labels(kept.matrix, inputs.labels, inputs.classes, kept.record.k, wanted)


def shown_label(jobs: ScanJobs, scan: str, layer: str, channel: int) -> ChannelLabel | None:
    """The label shown beside `channel` (auc >= LABEL_AUC), or None: not good enough, or the
    scan kept no responses or has no labels."""
    try:
        (found,) = response_labels(jobs, scan, layer, [channel])
    except ServiceError as error:
        if error.code is Code.FAILED_PRECONDITION:
            return None
        raise
    if not found.label or not found.auc >= LABEL_AUC:
        return None
    return found


def response_similar(
    jobs: ScanJobs, scan: str, layer: str, channel: int, top: int = 0
) -> list[tuple[int, float]]:
    top = top or DEFAULT_SIMILAR
    if not 0 < top <= MAX_SIMILAR:
        raise invalid_argument("TOP_OUT_OF_RANGE", f"top must be in 1..{MAX_SIMILAR}, got {top}")
    kept = kept_responses(jobs, scan, layer)
    return similar_channels(kept.matrix, kept.check_channel(channel), top)


def response_blocks(jobs: ScanJobs, scan: str, layer: str) -> Iterator[ResponsesBlock]:
    """The layer's matrix in blocks of rows with their image ids (checked now, read as
    the blocks are taken)."""
    kept = kept_responses(jobs, scan, layer)
    return _blocks(kept.matrix, jobs.store.image_ids(kept.record.id))


def response_ids(jobs: ScanJobs, scan: str, layer: str) -> list[str]:
    """The image ids of the layer's matrix rows, in order (checked as the matrix is)."""
    return jobs.store.image_ids(kept_responses(jobs, scan, layer).record.id)


def _blocks(matrix: np.ndarray, ids: list[str]) -> Iterator[ResponsesBlock]:
    images, channels = matrix.shape
    rows = max(1, min(EXPORT_ROWS, EXPORT_VALUES // max(1, channels)))
    for first in range(0, images, rows):
        block = np.ascontiguousarray(matrix[first : first + rows], dtype="<f4")
        yield ResponsesBlock(images, channels, first, ids[first : first + rows], block.tobytes())
    if images == 0:
        yield ResponsesBlock(0, channels, 0, [], b"")
