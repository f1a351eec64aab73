"""Neuron queries answered from a finished scan's stored results (no model run): a neuron's
ranked hits with their patches re-cropped from the original images, a layer's statistics.

Blocking functions: a face runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maxact.common.kinds import ScanState, TopKKind
from maxact.common.resources import scan_name
from maxact.common.statistics import LayerStatistics
from maxact.server.data.datasets import image_source
from maxact.server.data.reader import upright_size
from maxact.server.data.shards import shard_of
from maxact.server.errors import (
    ServiceError,
    failed_precondition,
    invalid_argument,
    not_found,
    shown,
)
from maxact.server.jobs.scan_jobs import ScanJobs, scan_id_from
from maxact.server.jobs.store import ScanRecord, TopKRow
from maxact.server.models.registry import check_channel
from maxact.server.patches.cache import file_key
from maxact.server.patches.crop import PatchImage, PatchRenderer
from maxact.server.patches.render import RenderOptions
from maxact.server.scan.neuron import Hit, input_box

# Crops of one answer run side by side (Pillow releases the GIL while decoding).
_CROP_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="maxact-crop")


@dataclass(frozen=True)
class StoredNeuron:
    """A neuron's stored ranking; `patches[i]` belongs to `hits[i]` (empty unless asked)."""

    record: ScanRecord
    hits: tuple[Hit, ...]
    patches: tuple[PatchImage, ...]


def _image_key(root: Path, image_id: str) -> Hashable | None:
    """The render-cache key of an image: its file's stamp, or its shard file's and its id."""
    located = shard_of(root, image_id)
    if located is None:
        return file_key(root / image_id)
    stamp = file_key(located[0])
    return None if stamp is None else (stamp, image_id)


def _stored_box(
    model: Any, layer: Any, prep: Any, root: Path | None, row: TopKRow, channel: int
) -> tuple[int, int, int, int]:
    """A stored hit's field in model-input pixels; with per-image sizing the image's size
    (read from its header) decides the input size, hence the field."""
    size = prep.fixed_size
    if size is None:
        assert root is not None
        size = prep.input_size_for(*upright_size(image_source(root, 0, row.image)))
        return input_box(model.layer(size, layer.name).field, size, row.y, row.x, channel)
    return input_box(layer.field, size, row.y, row.x, channel)


def finished_scan(jobs: ScanJobs, name: str) -> ScanRecord:
    record = jobs.get(scan_id_from(name))
    if record.state is not ScanState.SUCCEEDED:
        raise failed_precondition(
            "SCAN_NOT_FINISHED",
            f"scan '{record.name}' is {record.state}; this question needs a finished scan",
            scan=record.id,
        )
    return record


def _checked_k(record: ScanRecord, layer_name: str, k: int) -> int:
    """The number of hits to answer (`k` 0: all the scan kept) once `record` is known to have
    scanned `layer_name` and to have kept that many."""
    if layer_name not in record.layers:
        raise invalid_argument(
            "LAYER_NOT_FOUND",
            f"scan '{record.name}' did not scan layer {layer_name!r} "
            f"(it scanned {list(record.layers)})",
            layer=layer_name,
        )
    k = k or record.k
    if not 0 < k <= record.k:
        raise invalid_argument(
            "K_OUT_OF_RANGE", f"k must be in 1..{record.k} (the scan kept {record.k})"
        )
    return k


def stored_neuron(
    jobs: ScanJobs,
    scan: str,
    layer_name: str,
    channel: int,
    k: int,
    bottom: bool,
    render: RenderOptions | None,
    only_rank: int | None = None,
) -> StoredNeuron:
    """The top (or bottom) `k` (0: all kept) of one channel; with `render`, each hit's patch
    cropped again from its original image. `only_rank`: just the hit of that rank (one patch
    to crop, as an image URL asks)."""
    record = finished_scan(jobs, scan)
    if only_rank is not None:
        k = _checked_k(record, layer_name, only_rank)
    k = _checked_k(record, layer_name, k)
    model, prep, layers = jobs.prepare(record)
    layer = next(entry for entry in layers if entry.name == layer_name)
    check_channel(layer, channel)
    kind = TopKKind.of(record.mode, bottom)
    rows = jobs.store.topk_rows(record.id, layer.name, channel, kind, k)
    if only_rank is not None:
        rows = [row for row in rows if row.rank == only_rank]
    # the dataset's folder only: listing its images is not needed to crop k of them
    per_image = prep.fixed_size is None
    root = jobs.datasets.root_of(record.dataset) if render is not None or per_image else None
    try:
        boxes = [_stored_box(model, layer, prep, root, row, channel) for row in rows]
    except OSError as exc:
        raise not_found(
            "IMAGE_NOT_FOUND",
            f"an image of dataset {record.dataset!r} can no longer be read: {type(exc).__name__}",
        ) from None
    hits = tuple(
        Hit(row.rank, -1, row.image, row.score, (row.y, row.x), channel, box)
        for row, box in zip(rows, boxes, strict=True)
    )
    if render is None or root is None:
        return StoredNeuron(record, hits, ())
    renderer = PatchRenderer(model, layer.name, layer.field, prep, render)
    # the maps the scan kept for these hits: a mask or heatmap then needs no layer run
    kept = (
        jobs.maps.neuron(record.id, layer.name, channel, kind) if render.needs_activations else {}
    )
    patches = _cropped(renderer, record, root, rows, hits, channel, kept)
    return StoredNeuron(record, hits, patches)


def _cropped(
    renderer: PatchRenderer,
    record: ScanRecord,
    folder: Path,
    rows: list[TopKRow],
    hits: tuple[Hit, ...],
    channel: int,
    kept: dict[int, np.ndarray],
) -> tuple[PatchImage, ...]:
    """Each hit's patch, cropped again from its original image (with its kept map, if any);
    IMAGE_NOT_FOUND names an image that can no longer be read."""

    def crop(pair: tuple[TopKRow, Hit]) -> PatchImage | None:
        row, hit = pair
        try:
            source = image_source(folder, 0, row.image)
            return renderer(
                source,
                hit.box,
                hit.unit,
                channel,
                key=_image_key(folder, row.image),
                channel_map=kept.get(row.rank),
            )
        except (OSError, ValueError):
            return None

    patches = list(_CROP_POOL.map(crop, zip(rows, hits, strict=True)))
    for found, patch in zip(rows, patches, strict=True):
        if patch is None:
            raise not_found(
                "IMAGE_NOT_FOUND",
                f"image {found.image!r} of dataset {record.dataset!r} can no longer be read",
                image=found.image,
            )
    return tuple(p for p in patches if p is not None)


def stored_statistics(jobs: ScanJobs, scan: str, layer: str) -> LayerStatistics:
    """The statistics a finished scan stored for `layer`."""
    return layer_statistics(jobs, finished_scan(jobs, scan), layer)


def damaged_statistics(scan_id: str, layer: str, exc: Exception) -> ServiceError:
    """A statistics row that cannot be read fails that scan's statistics, nothing else."""
    return failed_precondition(
        "STATISTICS_DAMAGED",
        f"scan '{scan_name(scan_id)}' has a damaged statistics row for layer {shown(layer)} "
        f"({type(exc).__name__}: {str(exc)[:100]}); scan the dataset again",
        scan=scan_id,
        layer=layer[:200],
    )


def layer_statistics(jobs: ScanJobs, record: ScanRecord, layer: str) -> LayerStatistics:
    """The statistics `record` stored for `layer`; SCAN_NOT_FOUND when the scan was deleted
    meanwhile, LAYER_NOT_FOUND when it did not scan the layer, STATISTICS_DAMAGED when the
    stored row is missing or not a statistics document."""
    try:
        document = jobs.store.statistics(record.id, layer)
    except ValueError as exc:  # not JSON, not UTF-8
        raise damaged_statistics(record.id, layer, exc) from None
    if document is None:
        jobs.get(record.id)  # raises SCAN_NOT_FOUND when a DeleteScan won the race
        if layer in record.layers:
            raise damaged_statistics(record.id, layer, LookupError("no statistics row"))
        raise invalid_argument(
            "LAYER_NOT_FOUND",
            f"scan '{record.name}' did not scan layer {shown(layer)} "
            f"(it scanned {list(record.layers)})",
            layer=layer[:200],
        )
    try:
        return LayerStatistics.from_json(document)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise damaged_statistics(record.id, layer, exc) from None


def stored_rankings(
    jobs: ScanJobs, record: ScanRecord, layer: str, channels: Sequence[int], bottom: bool = False
) -> dict[int, list[TopKRow]]:
    """The stored top (or bottom) rows of several channels of a finished scan's `layer`,
    without boxes or patches: what a page of thumbnails names (images and scores)."""
    kind = TopKKind.of(record.mode, bottom)
    return {c: jobs.store.topk_rows(record.id, layer, c, kind, record.k) for c in channels}
