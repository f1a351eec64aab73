"""`maxact report SCAN --out DIR`: a static HTML gallery of a finished scan.

DIR/index.html                 the scanned layers (op, shape, receptive field, the top-1
                               patches of the strongest channels) and the model's catalogue
DIR/report.json                the scan, and which folder holds which layer
DIR/static/                    the pages' CSS and JS
DIR/layers/<safe>/index.html   a row per channel: top-k patches with scores and image names,
                               firing rate, selectivity, top classes, dead / non-selective badges
DIR/layers/<safe>/c<C>_r<R>.jpg  the patches (PNG where pixels must stay exact)
DIR/layers/<safe>/overview.jpg   the top-1 patch of every channel in a grid

Layer names may contain '/', ':' and '.', so folders get a safe name (report.json maps them).
Everything comes from the store: statistics and neuron queries; the server runs the model
only to draw `mask` / `heatmap` patches (once per image and layer).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from maxact.client import text_out
from maxact.client import types as t
from maxact.client.errors import MaxactError
from maxact.client.report import html as g
from maxact.client.report.layer_writer import (
    OVERVIEW_COLUMNS,
    OVERVIEW_TILE,
    LayerJob,
    overview_image,
    patch_file,
    write_layer,
)
from maxact.client.scans import LayerStatistics, ScanInfo
from maxact.common.defaults import DEFAULT_K, capped_k
from maxact.common.documents import scan_json
from maxact.common.kinds import RENDER_MODES
from maxact.common.render_choice import layer_render, patch_format

__all__ = [
    "OVERVIEW_COLUMNS",
    "OVERVIEW_TILE",
    "OutputNotEmptyError",
    "overview_image",
    "patch_file",
    "safe_names",
    "write_report",
]

DEFAULT_PATCH_SIZE = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_STEM = 60
# what a report writes at the top of DIR: with --force only these are replaced
_OWN_ENTRIES = ("index.html", "report.json", "layers", "static")


class OutputNotEmptyError(ValueError):
    """--out names a folder that already holds files (a usage error: exit 2)."""


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


def prepare_output(out: Path, force: bool) -> None:
    """Refuse a non-empty folder unless `force`; with `force`, remove what an earlier report
    wrote there (its layers, pages, static files) and nothing else."""
    if out.exists() and not out.is_dir():
        raise OutputNotEmptyError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputNotEmptyError(
                f"--out {out} is not empty: choose a new folder, or pass --force to replace "
                "the report in it"
            )
        for name in _OWN_ENTRIES:
            entry = out / name
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.exists():
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _field_text(layer: t.LayerInfo | None) -> str:
    if layer is None:
        return "unknown"
    rf = layer.receptive_field
    if rf is None:
        return f"none ({layer.field_error})" if layer.field_error else "none"
    if not rf.spatial:
        return "whole image"
    return text_out.geometry_text(rf.geometry).replace("  ", " / ")


@dataclass(frozen=True)
class ReportContext:
    """Everything the pages need that is not a patch."""

    scan: ScanInfo
    statistics: dict[str, LayerStatistics]
    model: t.ModelInfo | None
    note: str  # why the model's catalogue is missing, if it is
    size: tuple[int, int] | None  # the model input the layers are described at
    header: g.ScanHeader
    folders: dict[str, str]

    def layer(self, name: str) -> t.LayerInfo | None:
        if self.model is None:
            return None
        return next((layer for layer in self.model.layers if layer.name == name), None)


def load_context(
    client: Any, scan_id: str, k: int | None, size: tuple[int, int] | None, patch_size: int
) -> ReportContext:
    """The scan, its statistics (FAILED_PRECONDITION unless it succeeded) and the model's
    catalogue at the size the scan ran at (or `size`)."""
    scan: ScanInfo = client.scans.get(scan_id)
    statistics = {name: client.scans.statistics(scan.id, name) for name in scan.layers}
    fixed = size or (scan.preprocessing.output_size() if scan.preprocessing else None)
    size = size or scan.input_size  # per-image sizes: a square image's, the render rule's size
    try:
        model, note = client.get_model(scan.model, size=size), ""
    except MaxactError as error:
        model, note = None, f"the model's layers could not be described: {error}"
    header = g.ScanHeader(
        id=scan.id,
        model=scan.model,
        dataset=scan.dataset,
        images_done=scan.images_done,
        images_failed=scan.images_failed,
        k=capped_k(scan.k, k or DEFAULT_K),
        mode=scan.mode,
        input_size=fixed,  # the header names a size only when every image had it
        patch_size=patch_size,
    )
    return ReportContext(scan, statistics, model, note, size, header, safe_names(scan.layers))


def layer_summary(ctx: ReportContext, name: str, render: str) -> g.LayerSummary:
    stats = ctx.statistics[name]
    info = ctx.layer(name)
    labelled = any(c.class_mean for c in stats.channels)
    return g.LayerSummary(
        name=name,
        directory=ctx.folders[name],
        op=info.op if info is not None else "",
        shape=info.shape if info is not None else (len(stats.channels),),
        field=_field_text(info),
        global_context=info.global_context if info is not None else False,
        channels=len(stats.channels),
        dead=sum(1 for c in stats.channels if c.dead),
        labelled=labelled,
        non_selective=sum(1 for c in stats.channels if g.non_selective(c, labelled)),
        images_scanned=stats.images_scanned,
        render=render,
    )


def write_index(out: Path, ctx: ReportContext, summaries: list[g.LayerSummary]) -> Path:
    catalogue = [
        g.ModelLayerRow(
            name=layer.name,
            op=layer.op,
            shape=layer.shape,
            field=_field_text(layer),
            global_context=layer.global_context,
            directory=ctx.folders.get(layer.name),
        )
        for layer in (ctx.model.layers if ctx.model is not None else ())
    ]
    g.copy_static(out)
    index = out / "index.html"
    index.write_text(g.index_page(ctx.header, summaries, catalogue, ctx.note), encoding="utf-8")
    doc = g.mapping_json(scan_json(ctx.scan), summaries)
    (out / "report.json").write_text(doc, encoding="utf-8")
    return index


def _classes_page(
    client: Any, scan: ScanInfo, layer: str, folder: Path, render: str, mask_quantile: float | None
) -> Path:
    """The layer's classes page (classes_page.py), its patches rendered as the layer page's;
    when the server cannot answer the class questions (fewer than two classes, an older
    scan) the page says why."""
    from maxact.client.report.classes_page import write_classes_page, write_unanswered_page

    try:
        return write_classes_page(client, scan, layer, folder, render, mask_quantile)
    except MaxactError as error:
        if error.code.name != "FAILED_PRECONDITION":
            raise
        return write_unanswered_page(layer, error.message, folder)


def _class_names(client: Any, model: str) -> t.ClassNames:
    """The model's output class names (empty when it names none or is gone)."""
    try:
        names: t.ClassNames = client.analysis.class_names(model)
        return names
    except MaxactError:
        return t.ClassNames()


def _labels(names: t.ClassNames, layer: str, channels: int) -> dict[int, str]:
    found = {channel: names.label(layer, channel) for channel in range(channels)}
    return {channel: label for channel, label in found.items() if label}


def _layer_job(
    ctx: ReportContext,
    name: str,
    out: Path,
    render: str | None,
    patch_size: int,
    mask_quantile: float | None,
    names: t.ClassNames,
) -> LayerJob:
    """What one layer's page needs: its folder (made), its render and patch format, labels."""
    info = ctx.layer(name)
    mode = layer_render(info, ctx.size, render)
    folder = out / "layers" / ctx.folders[name]
    folder.mkdir(parents=True, exist_ok=True)
    return LayerJob(
        name=name,
        folder=folder,
        statistics=ctx.statistics[name],
        k=ctx.header.k,
        render=mode,
        patch_size=patch_size,
        file_format=patch_format(info, mode, patch_size),
        mask_quantile=mask_quantile,
        labels=_labels(names, name, len(ctx.statistics[name].channels)),
    )


def write_report(
    client: Any,
    scan_id: str,
    out: Path,
    *,
    k: int | None = None,
    size: tuple[int, int] | None = None,
    progress: Any = None,
    patch_size: int = DEFAULT_PATCH_SIZE,
    render: str | None = None,
    mask_quantile: float | None = None,
    force: bool = False,
) -> Path:
    """Write the gallery of a finished scan into `out`; returns the path of index.html.

    `render` None chooses per layer (choose.default_render: `mask` where the receptive field
    is larger than half the input); `patch_size` > 0 fits every patch into that square
    (0: patches at their own size, as PNG)."""
    if render is not None and render not in RENDER_MODES:
        raise ValueError(f"render must be one of {RENDER_MODES}, got {render!r}")
    ctx = load_context(client, scan_id, k, size, patch_size)  # before touching `out`
    prepare_output(out, force)
    total = sum(len(s.channels) for s in ctx.statistics.values())
    done = 0

    def advance(channels: int) -> None:
        nonlocal done
        done += channels
        if progress is not None:
            progress.update(done, total)

    names = _class_names(client, ctx.scan.model)
    summaries = []
    for name in ctx.scan.layers:
        job = _layer_job(ctx, name, out, render, patch_size, mask_quantile, names)
        # labels from the scan's per-image responses beside the other channels
        job = replace(
            job, labels={**client.responses.shown_labels(ctx.scan.id, name), **job.labels}
        )
        summary = layer_summary(ctx, name, job.render)
        summaries.append(write_layer(client, ctx.scan.id, ctx.header, summary, job, advance))
        if summary.labelled:
            _classes_page(client, ctx.scan, name, job.folder, job.render, mask_quantile)
    if progress is not None:
        progress.close()
    return write_index(out, ctx, summaries)
