"""One layer of a report: every channel's top-k patches as compact files, its page, overview.

Neuron queries run a few at a time (the server renders; its caches decode each source image
once and run the layer once per image); re-encoding to JPEG runs in the same threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from PIL import Image

from maxact.client import types as t
from maxact.client.errors import MaxactError
from maxact.client.montage import BACKGROUND, render_montage, stack_rows
from maxact.client.report import html as g
from maxact.client.report.encode import SUFFIXES, decode, encode, recode
from maxact.client.scans import ChannelStatistics, LayerStatistics
from maxact.common.defaults import HISTOGRAM_BINS

QUERY_THREADS = 8
CHUNK = 4 * QUERY_THREADS  # channels per slice: the progress moves, memory holds one slice
OVERVIEW_TILE = 96
OVERVIEW_COLUMNS = 16


@dataclass(frozen=True)
class LayerJob:
    """What to write for one layer."""

    name: str
    folder: Path
    statistics: LayerStatistics
    k: int
    render: str
    patch_size: int
    file_format: str  # "jpeg" | "png"
    mask_quantile: float | None = None
    labels: dict[int, str] = field(default_factory=dict)  # class names of named channels


def patch_file(channel: int, rank: int, file_format: str = "png") -> str:
    return f"c{channel}_r{rank}{SUFFIXES[file_format]}"


def overview_image(
    tops: Sequence[tuple[int, Image.Image | None]], tile: int = OVERVIEW_TILE
) -> Image.Image:
    """(channel, top-1 patch or None) per channel -> a grid, 'c<C>' under each tile."""
    rows = []
    for start in range(0, len(tops), OVERVIEW_COLUMNS):
        chunk = tops[start : start + OVERVIEW_COLUMNS]
        tiles = [
            (
                patch if patch is not None else Image.new("RGB", (tile, tile), (200, 200, 200)),
                f"c{c}",
            )
            for c, patch in chunk
        ]
        rows.append((f"channels {chunk[0][0]}-{chunk[-1][0]}", render_montage(tiles, tile=tile)))
    if not rows:
        return Image.new("RGB", (tile, tile), BACKGROUND)
    return stack_rows(rows)


def _channel_patches(
    client: Any, scan_id: str, job: LayerJob, channel: int
) -> tuple[int, list[tuple[t.Patch, bytes]]]:
    """One channel's top-k: each patch with its bytes in the report's file format."""
    _, patches, _ = client.scans.neuron(
        scan_id,
        job.name,
        channel,
        k=job.k,
        render=job.render,
        patch_size=job.patch_size,
        mask_quantile=job.mask_quantile,
    )
    ranked = sorted(patches, key=lambda p: p.hit.rank)
    return channel, [(p, recode(p.png, job.file_format)) for p in ranked]


def _histograms(
    client: Any, scan_id: str, layer: str, channels: list[int], pool: ThreadPoolExecutor
) -> dict[int, tuple[int, ...]]:
    """A small histogram of each channel's per-image responses (none when the scan did not
    keep them)."""
    try:
        first = client.responses.histogram(scan_id, layer, channels[0], HISTOGRAM_BINS)
    except MaxactError as error:
        if error.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
            return {}
        raise
    rest = pool.map(
        lambda c: client.responses.histogram(scan_id, layer, c, HISTOGRAM_BINS), channels[1:]
    )
    return {c: tuple(h.counts) for c, h in zip(channels, [first, *rest], strict=True)}


def write_layer(
    client: Any,
    scan_id: str,
    header: g.ScanHeader,
    summary: g.LayerSummary,
    job: LayerJob,
    advance: Callable[[int], None],
) -> g.LayerSummary:
    """Write the layer's patches, overview.jpg and index.html; returns the summary with its
    preview (the top-1 patches of the strongest channels) filled in."""
    by_channel: dict[int, ChannelStatistics] = {c.channel: c for c in job.statistics.channels}
    channels = sorted(by_channel)
    neurons: list[g.NeuronEntry] = []
    tops: list[tuple[int, Image.Image | None]] = []
    first_files: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=QUERY_THREADS) as pool:
        for start in range(0, len(channels), CHUNK):
            chunk = channels[start : start + CHUNK]
            found = dict(pool.map(lambda c: _channel_patches(client, scan_id, job, c), chunk))
            histograms = _histograms(client, scan_id, job.name, chunk, pool)
            for channel in chunk:
                entries = []
                for patch, data in found[channel]:
                    file = patch_file(channel, patch.hit.rank, job.file_format)
                    (job.folder / file).write_bytes(data)
                    entries.append(
                        g.PatchEntry(patch.hit.rank, file, patch.hit.score, patch.hit.image)
                    )
                label = job.labels.get(channel, "")
                counts = histograms.get(channel, ())
                neurons.append(g.NeuronEntry(by_channel[channel], tuple(entries), label, counts))
                if found[channel]:
                    first_files[channel] = entries[0].file
                tops.append((channel, decode(found[channel][0][1]) if found[channel] else None))
            advance(len(chunk))
    overview = overview_image(tops)
    (job.folder / "overview.jpg").write_bytes(encode(overview, "jpeg"))
    strongest = sorted(
        (c for c in channels if c in first_files and not by_channel[c].dead),
        key=lambda c: (-by_channel[c].max_max, c),
    )[: g.PREVIEW_COUNT]
    summary = _with_preview(summary, tuple((first_files[c], c) for c in strongest))
    (job.folder / "index.html").write_text(g.layer_page(header, summary, neurons), encoding="utf-8")
    return summary


def _with_preview(summary: g.LayerSummary, preview: tuple[tuple[str, int], ...]) -> g.LayerSummary:
    from dataclasses import replace

    return replace(summary, preview=preview)
