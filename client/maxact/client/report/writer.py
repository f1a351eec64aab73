"""`maxact report SCAN --out DIR`: a static HTML gallery of a finished scan.

DIR/index.html           the scanned layers (op, shape, receptive field, overview) and the
                         model's whole layer catalogue
DIR/report.json          the scan, and which folder holds which layer
DIR/layers/<safe>/index.html     a row per channel: top-k patches with scores, firing rate,
                                 selectivity, top classes, dead / non-selective badges
DIR/layers/<safe>/c<C>_r<R>.png  the patches, as the server cropped them
DIR/layers/<safe>/overview.png   the top-1 patch of every channel in a grid

Layer names may contain '/', ':' and '.', so folders get a safe name (report.json maps them).
Everything comes from the store: statistics and neuron queries, no model run.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from maxact.client import text_out
from maxact.client import types as t
from maxact.client.defaults import DEFAULT_K
from maxact.client.errors import MaxactError
from maxact.client.json_out import scan_json
from maxact.client.montage import BACKGROUND, render_montage, stack_rows
from maxact.client.report import html as g
from maxact.client.scans import ChannelStatistics, LayerStatistics, ScanInfo

OVERVIEW_TILE = 64
OVERVIEW_COLUMNS = 16
QUERY_THREADS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_STEM = 60


def safe_names(names: Iterable[str]) -> dict[str, str]:
    """Layer name -> a folder name of [A-Za-z0-9_-] only, distinct even on case-insensitive
    file systems; a name that had to change gets a short hash of the original appended."""
    result: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        stem = _UNSAFE.sub("_", name).strip("_")[:_MAX_STEM] or "layer"
        safe = stem
        if safe != name or safe.lower() in taken:
            safe = f"{stem}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"
        while safe.lower() in taken:  # pragma: no cover - a hash collision
            safe += "_"
        taken.add(safe.lower())
        result[name] = safe
    return result


def patch_file(channel: int, rank: int) -> str:
    return f"c{channel}_r{rank}.png"


def _field_text(layer: t.LayerInfo | None) -> str:
    if layer is None:
        return "unknown"
    rf = layer.receptive_field
    if rf is None:
        return f"none ({layer.field_error})" if layer.field_error else "none"
    if not rf.spatial:
        return "whole image"
    return text_out.geometry_text(rf.geometry).replace("  ", " / ")


def overview_image(
    tops: Sequence[tuple[int, bytes | None, float]], tile: int = OVERVIEW_TILE
) -> Image.Image:
    """(channel, top-1 PNG or None, score) per channel -> a grid, 'c<C>' under each tile."""
    rows = []
    for start in range(0, len(tops), OVERVIEW_COLUMNS):
        chunk = tops[start : start + OVERVIEW_COLUMNS]
        tiles = []
        for channel, png, _score in chunk:
            if png:
                with Image.open(io.BytesIO(png)) as image:
                    image.load()
                    patch = image.copy()
            else:
                patch = Image.new("RGB", (tile, tile), (200, 200, 200))
            tiles.append((patch, f"c{channel}"))
        last = chunk[-1][0]
        rows.append((f"channels {chunk[0][0]}-{last}", render_montage(tiles, tile=tile)))
    if not rows:
        return Image.new("RGB", (tile, tile), BACKGROUND)
    return stack_rows(rows)


def _query(
    client: Any, scan_id: str, layer: str, channels: Sequence[int], k: int, patch_size: int = 0
) -> dict[int, tuple[t.Patch, ...]]:
    """Every channel's top-k with patches; a few calls in flight (the channel is thread-safe)."""

    def one(channel: int) -> tuple[int, tuple[t.Patch, ...]]:
        _, patches, _ = client.scans.neuron(scan_id, layer, channel, k=k, patch_size=patch_size)
        return channel, tuple(sorted(patches, key=lambda p: p.hit.rank))

    with ThreadPoolExecutor(max_workers=QUERY_THREADS) as pool:
        return dict(pool.map(one, channels))


def _model_info(client: Any, scan: ScanInfo, size: tuple[int, int] | None) -> tuple[Any, str]:
    """The model's catalogue, or (None, why) when it can no longer be described."""
    try:
        return client.get_model(scan.model, size=size), ""
    except MaxactError as error:
        return None, f"the model's layers could not be described: {error}"


def _classes_page(client: Any, scan: ScanInfo, layer: str, folder: Path) -> Path:
    """The layer's classes page (classes_page.py); when the server cannot answer the class
    questions (fewer than two classes, an older scan) the page says why."""
    from maxact.client.report.classes_page import write_classes_page, write_unanswered_page

    try:
        return write_classes_page(client, scan, layer, folder)
    except MaxactError as error:
        if error.code.name != "FAILED_PRECONDITION":
            raise
        return write_unanswered_page(layer, error.message, folder)


def _class_names(client: Any, model: str) -> t.ClassNames:
    """The model's output class names (empty when it names none or is gone)."""
    try:
        return client.analysis.class_names(model)
    except MaxactError:
        return t.ClassNames()


def write_report(
    client: Any,
    scan_id: str,
    out: Path,
    *,
    k: int | None = None,
    size: tuple[int, int] | None = None,
    progress: Any = None,
    patch_size: int = 0,
) -> Path:
    """Write the gallery of a finished scan into `out`; returns the path of index.html.

    `patch_size` > 0 has the server letterbox every patch into that square (smaller files)."""
    scan: ScanInfo = client.scans.get(scan_id)
    statistics: dict[str, LayerStatistics] = {
        name: client.scans.statistics(scan.id, name)  # FAILED_PRECONDITION unless succeeded
        for name in scan.layers
    }
    k = min(k or DEFAULT_K, scan.k or DEFAULT_K)
    model, note = _model_info(client, scan, size)
    described = {layer.name: layer for layer in model.layers} if model is not None else {}
    folders = safe_names(scan.layers)
    names = _class_names(client, scan.model)
    header = g.ScanHeader(
        id=scan.id,
        model=scan.model,
        dataset=scan.dataset,
        images_done=scan.images_done,
        images_failed=scan.images_failed,
        k=k,
        mode=scan.mode,
    )
    out.mkdir(parents=True, exist_ok=True)
    layers_dir = out / "layers"
    total = sum(len(s.channels) for s in statistics.values())
    done = 0
    summaries: list[g.LayerSummary] = []
    for name in scan.layers:
        stats = statistics[name]
        info = described.get(name)
        folder = layers_dir / folders[name]
        if folder.exists():
            shutil.rmtree(folder)  # a re-run must not leave patches of an older scan
        folder.mkdir(parents=True)
        labelled = any(c.class_mean for c in stats.channels)
        summary = g.LayerSummary(
            name=name,
            directory=folders[name],
            op=info.op if info is not None else "",
            shape=info.shape if info is not None else (len(stats.channels),),
            field=_field_text(info),
            global_context=info.global_context if info is not None else False,
            channels=len(stats.channels),
            dead=sum(1 for c in stats.channels if c.dead),
            labelled=labelled,
            non_selective=sum(1 for c in stats.channels if g.non_selective(c, labelled)),
            images_scanned=stats.images_scanned,
        )
        neurons, tops = [], []
        by_channel: dict[int, ChannelStatistics] = {c.channel: c for c in stats.channels}
        channels = sorted(by_channel)
        # in slices, so the progress bar moves and memory holds one slice of PNGs at a time
        for start in range(0, len(channels), 4 * QUERY_THREADS):
            chunk = channels[start : start + 4 * QUERY_THREADS]
            found = _query(client, scan.id, name, chunk, k, patch_size)
            for channel in chunk:
                entries = []
                for patch in found[channel]:
                    file = patch_file(channel, patch.hit.rank)
                    (folder / file).write_bytes(patch.png)
                    entries.append(
                        g.PatchEntry(patch.hit.rank, file, patch.hit.score, patch.hit.image)
                    )
                label = names.label(name, channel) or ""
                neurons.append(g.NeuronEntry(by_channel[channel], tuple(entries), label))
                first = found[channel][0] if found[channel] else None
                tops.append(
                    (channel, first.png if first else None, first.hit.score if first else 0.0)
                )
            done += len(chunk)
            if progress is not None:
                progress.update(done, total)
        overview_image(tops).save(folder / "overview.png")
        (folder / "index.html").write_text(g.layer_page(header, summary, neurons), encoding="utf-8")
        if labelled:
            _classes_page(client, scan, name, folder)
        summaries.append(summary)
    if progress is not None:
        progress.close()
    catalogue = [
        g.ModelLayerRow(
            name=layer.name,
            op=layer.op,
            shape=layer.shape,
            field=_field_text(layer),
            global_context=layer.global_context,
            directory=folders.get(layer.name),
        )
        for layer in (model.layers if model is not None else ())
    ]
    index = out / "index.html"
    index.write_text(g.index_page(header, summaries, catalogue, note), encoding="utf-8")
    (out / "report.json").write_text(g.mapping_json(scan_json(scan), summaries), encoding="utf-8")
    return index
