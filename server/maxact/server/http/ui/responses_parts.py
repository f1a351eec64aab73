"""What the layer and neuron pages show from a finished scan's per-image responses: labels
(auc >= LABEL_AUC), small histograms, typical examples and similar channels. A scan that kept
no responses (or a dataset without labels) shows none of it: FAILED_PRECONDITION is "none"."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from cachetools import LRUCache
from fastapi import APIRouter, Request
from fastapi.responses import Response

from maxact.common.defaults import HISTOGRAM_BINS, LABEL_AUC
from maxact.common.formatting import histogram_heights, label_text
from maxact.common.kinds import ScanState
from maxact.server.core.responses import (
    Histogram,
    response_histograms,
    response_labels,
    response_quantile,
    response_similar,
)
from maxact.server.data.datasets import image_source
from maxact.server.data.reader import load_original
from maxact.server.errors import Code, ServiceError, invalid_argument, not_found
from maxact.server.http.ui.guard import guarded
from maxact.server.http.ui.patches import THUMBNAIL
from maxact.server.http.ui.render import page, url
from maxact.server.http.ui.views import scan_view
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.jobs.store import ScanRecord
from maxact.server.patches.crop import encode_png
from maxact.server.patches.render import letterbox

TYPICAL_QUANTILE = 0.5  # the neuron page's typical examples: the images nearest the median
SIMILAR_SHOWN = 8
LABELS_CACHED = 1 << 16  # channels whose label is remembered
FINISHED_CACHE_S = 86400  # a finished scan's matrix never changes
NEURON_BINS = 50
NEURONS_CACHED = 4096  # channels whose neuron-page responses sections are kept (~10 KB each)

if TYPE_CHECKING:  # services.py holds this module's LabelCache
    from maxact.server.http.ui.services import UiServices

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


class LabelCache:
    """The shown labels of finished scans' channels, computed once per channel rather than at
    every visit (a finished scan's matrix never changes; 50 channels at 50k images and 10
    classes take about a second). "" remembers "no label"."""

    def __init__(self, size: int = LABELS_CACHED) -> None:
        self._done: LRUCache[tuple[str, str, int], str] = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def shown(self, jobs: ScanJobs, scan: str, layer: str, channels: list[int]) -> dict[int, str]:
        """As shown_labels; `scan` is the scan's own id (the record's), not a request's name."""
        with self._lock:
            known = {
                c: self._done[(scan, layer, c)] for c in channels if (scan, layer, c) in self._done
            }
        missing = [c for c in channels if c not in known]
        fresh = shown_labels(jobs, scan, layer, missing)
        with self._lock:
            for channel in missing:
                self._done[(scan, layer, channel)] = known[channel] = fresh.get(channel, "")
        return {c: text for c, text in known.items() if text}


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


@dataclass(frozen=True)
class NeuronResponses:
    """The neuron page's responses sections of one channel (None/empty: not kept)."""

    label: str  # "face (AUC 0.98)", "" when not labelled well enough
    bars: list[Bar] | None
    typical: Typical | None
    similar: list[tuple[int, float]]


def neuron_responses(
    jobs: ScanJobs, labels: LabelCache, scan: str, layer: str, channel: int
) -> NeuronResponses:
    """Every responses section of one channel of a finished scan (`scan`: its record id)."""
    hist = histogram_bars(jobs, scan, layer, [channel], NEURON_BINS).get(channel)
    if hist is None:  # no matrix: no label, typical examples or similar channels either
        return NeuronResponses("", None, None, [])
    return NeuronResponses(
        labels.shown(jobs, scan, layer, [channel]).get(channel, ""),
        hist,
        typical(jobs, scan, layer, channel),
        similar(jobs, scan, layer, channel),
    )


class ResponsesCache:
    """The responses sections of finished scans' channels, computed once per channel: each
    reads the scan's per-image matrix (~100 ms at 20k images), which never changes once the
    scan has finished. A running scan's are never kept, nor "no matrix" (a folder restored
    from a backup shows again)."""

    def __init__(self, size: int = NEURONS_CACHED) -> None:
        self._done: LRUCache[tuple[str, str, int], NeuronResponses] = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def get(
        self, jobs: ScanJobs, labels: LabelCache, record: ScanRecord, layer: str, channel: int
    ) -> NeuronResponses:
        key = (record.id, layer, channel)
        with self._lock:
            found = self._done.get(key)
        if found is not None:
            return found
        found = neuron_responses(jobs, labels, record.id, layer, channel)
        if record.state is ScanState.SUCCEEDED and found.bars is not None:  # none: cheap
            with self._lock:
                self._done[key] = found
        return found


def typical_png(jobs: ScanJobs, scan: str, layer: str, channel: int, rank: int, size: int) -> bytes:
    """The whole image of one typical example, letterboxed into size x size (the image is
    the one the matrix names: a request never names a file)."""
    answer = response_quantile(jobs, scan, layer, channel, TYPICAL_QUANTILE)
    if not 1 <= rank <= len(answer.examples):
        raise invalid_argument("RANK_OUT_OF_RANGE", f"rank must be in 1..{len(answer.examples)}")
    image = answer.examples[rank - 1][1]
    root = jobs.datasets.root_of(answer.record.dataset)
    try:
        original = load_original(image_source(root, 0, image))
    except (OSError, ValueError):
        raise not_found(
            "IMAGE_NOT_FOUND",
            f"image {image!r} of dataset {answer.record.dataset!r} can no longer be read",
            image=image,
        ) from None
    return encode_png(letterbox(original.convert("RGB"), size))


def responses_page(ui: UiServices, scan_id: str, layer: str, channel: int, whole: bool) -> Response:
    """The neuron page's responses sections: an htmx fragment, or (`whole`, a browser
    without JavaScript following the page's link) a page of their own."""
    record = ui.scans.get(scan_id)
    found = ui.responses.get(ui.jobs, ui.labels, record, layer, channel)

    def neuron_url(c: int) -> str:
        return url(f"/scans/{record.id}/neurons", layer=layer, channel=c)

    return page(
        "responses.html" if whole else "_responses.html",
        scan=scan_view(record),
        layer=layer,
        channel=channel,
        found=found,
        neuron_url=neuron_url,
        thumb=THUMBNAIL,
        whole=whole,
    )


def responses_routes(router: APIRouter, ui: UiServices) -> None:
    """The neuron page's responses sections and the whole images of its typical examples."""
    guard = guarded(ui.token)

    @router.get("/scans/{scan_id}/neurons/responses", include_in_schema=False)
    @guard
    async def responses_fragment(
        request: Request, scan_id: str, layer: str = "", channel: int = 0
    ) -> Response:
        whole = "hx-request" not in request.headers  # htmx asks for the fragment
        return await asyncio.to_thread(responses_page, ui, scan_id, layer, channel, whole)

    @router.get("/ui/typical/{scan_id}.png", include_in_schema=False)
    @guard
    async def typical_image(
        request: Request, scan_id: str, layer: str, channel: int, rank: int
    ) -> Response:
        png = await asyncio.to_thread(
            typical_png, ui.jobs, scan_id, layer, channel, rank, THUMBNAIL
        )
        return Response(
            png,
            media_type="image/png",
            headers={"Cache-Control": f"private, max-age={FINISHED_CACHE_S}"},
        )
