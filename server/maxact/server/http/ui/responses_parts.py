"""What the layer and neuron pages show from a finished scan's per-image responses: labels
(auc >= LABEL_AUC), small histograms, typical examples and similar channels. A scan that kept
no responses (or a dataset without labels) shows none of it: FAILED_PRECONDITION is "none"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from maxact.common.defaults import HISTOGRAM_BINS, LABEL_AUC
from maxact.common.formatting import histogram_heights, label_text
from maxact.server.core.responses import (
    Histogram,
    response_histograms,
    response_labels,
    response_quantile,
    response_similar,
)
from maxact.server.errors import Code, ServiceError
from maxact.server.jobs.scan_jobs import ScanJobs

TYPICAL_QUANTILE = 0.5  # the neuron page's typical examples: the images nearest the median
SIMILAR_SHOWN = 8
NEURON_BINS = 50

T = TypeVar("T")


@dataclass(frozen=True)
class Bar:
    height: int  # percent of the tallest bin
    count: int
    low: float
    high: float


@dataclass(frozen=True)
class Typical:
    quantile: float
    value: float
    examples: list[tuple[int, str, float]]  # (rank, image id, response)


def bars(found: Histogram) -> list[Bar]:
    heights = histogram_heights(found.counts)
    return [
        Bar(h, c, found.edges[i], found.edges[i + 1])
        for i, (h, c) in enumerate(zip(heights, found.counts, strict=True))
    ]


def _or_none(ask: Callable[[], T]) -> T | None:
    """The answer, or None when the scan kept no responses or has no labels."""
    try:
        return ask()
    except ServiceError as error:
        if error.code is Code.FAILED_PRECONDITION:
            return None
        raise


def shown_labels(jobs: ScanJobs, scan: str, layer: str, channels: list[int]) -> dict[int, str]:
    """{channel: "face (AUC 0.98)"} of `channels` labelled well enough (only these computed)."""
    if not channels:
        return {}
    found = _or_none(lambda: response_labels(jobs, scan, layer, channels)) or []
    return {f.channel: label_text(f.label, f.auc) for f in found if f.label and f.auc >= LABEL_AUC}


def histogram_bars(
    jobs: ScanJobs, scan: str, layer: str, channels: list[int], bins: int = HISTOGRAM_BINS
) -> dict[int, list[Bar]]:
    if not channels:
        return {}
    found = _or_none(lambda: response_histograms(jobs, scan, layer, channels, bins)) or {}
    return {channel: bars(h) for channel, h in found.items()}


def typical(jobs: ScanJobs, scan: str, layer: str, channel: int) -> Typical | None:
    answer = _or_none(lambda: response_quantile(jobs, scan, layer, channel, TYPICAL_QUANTILE))
    if answer is None:
        return None
    return Typical(TYPICAL_QUANTILE, answer.value, answer.examples)


def similar(jobs: ScanJobs, scan: str, layer: str, channel: int) -> list[tuple[int, float]]:
    return _or_none(lambda: response_similar(jobs, scan, layer, channel, SIMILAR_SHOWN)) or []
