"""Typed results -> the JSON documents of `maxact ... --json` (the contract scripts rely on;
docs/cli.md). Shared by the CLI, the report, the demo and the server's HTTP API, whose
documents are these same ones."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from maxact.common import results as t
from maxact.common.kinds import RenderMode


def number(value: float) -> int | float:
    """An int when the value is integral, else the float (fractional strides stay exact)."""
    as_float = float(value)
    if as_float.is_integer():
        return int(as_float)
    return as_float


def _numbers(values: Iterable[float]) -> list[int | float]:
    return [number(v) for v in values]


def _intervals(values: Iterable[t.Interval]) -> list[list[int]]:
    return [[int(a), int(b)] for a, b in values]


def geometry_json(geometry: t.FieldGeometry) -> dict[str, Any]:
    return {
        "size": _numbers(geometry.size),
        "stride": _numbers(geometry.stride),
        "padding": _numbers(geometry.padding),
    }


def channel_group_json(group: t.ChannelGroup, intervals: bool = True) -> dict[str, Any]:
    doc = {"channels": [group.first_channel, group.last_channel], **geometry_json(group.geometry)}
    if intervals:
        doc["rows"] = _intervals(group.rows)
        doc["cols"] = _intervals(group.cols)
    return doc


def rf_json(info: t.FieldInfo, intervals: bool | None = None) -> dict[str, Any]:
    """The `maxact rf --json` document; box and box_unclipped only when a unit was asked.
    `intervals` (every unit's rows/cols, the layer's and each channel group's): by default
    in the layer's document and left out of one unit's, whose answer is its box."""
    if intervals is None:
        intervals = info.box is None
    rf = info.receptive_field
    doc: dict[str, Any] = {
        "model": info.model,
        "layer": info.layer,
        "input": {"name": info.input_name, "height": info.input_height, "width": info.input_width},
        "shape": list(info.shape),
        "rf": geometry_json(rf.geometry),
        "channel_groups": [channel_group_json(g, intervals) for g in rf.channel_groups],
        "global_context": rf.global_context,
    }
    doc.update(tokens_json(rf))
    if intervals:
        doc["rows"] = _intervals(rf.rows)
        doc["cols"] = _intervals(rf.cols)
    if info.box is not None:
        doc["box"] = list(info.box)
    if info.box_unclipped is not None:
        doc["box_unclipped"] = list(info.box_unclipped)
    return doc


def tokens_json(rf: t.ReceptiveField) -> dict[str, Any]:
    """`{"tokens": {"grid": [H, W], "prefix": n}}` for a token sequence, else nothing."""
    if rf.tokens is None:
        return {}
    return {"tokens": {"grid": [rf.tokens.height, rf.tokens.width], "prefix": rf.tokens.prefix}}


def layers_json(info: t.ModelInfo) -> dict[str, Any]:
    """The `maxact layers --json` document: rf is null where no field could be derived."""
    return {
        "model": info.name,
        "layers": [
            {
                "name": layer.name,
                "op": layer.op,
                "shape": list(layer.shape),
                "rf": geometry_json(layer.receptive_field.geometry)
                if layer.receptive_field is not None
                else None,
                "global_context": layer.global_context,
                "channel_groups": [
                    {"channels": [g.first_channel, g.last_channel], **geometry_json(g.geometry)}
                    for g in layer.receptive_field.channel_groups
                ]
                if layer.receptive_field is not None
                else [],
                **(tokens_json(layer.receptive_field) if layer.receptive_field else {}),
                **({"error": layer.field_error} if layer.field_error else {}),
            }
            for layer in info.layers
        ],
    }


def hit_json(hit: t.Hit, patch_file: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "rank": hit.rank,
        "image": hit.image,
        "score": hit.score,
        "unit": list(hit.unit),
        "box": list(hit.box),
    }
    if patch_file is not None:
        doc["patch"] = patch_file
    return doc


def patch_json(patch: t.Patch, patch_file: str | None = None, render: str = "rf") -> dict[str, Any]:
    """A hit of the document. Under `--render mask` `box` is the region the patch crops (the
    mask's box, original pixels) and `rf_box` the receptive field (clipped); otherwise `box`
    is the receptive field clipped to the image, which is what the patch shows."""
    doc = hit_json(patch.hit, patch_file)
    if render == RenderMode.MASK and patch.patch_box is not None:
        doc["box"] = list(patch.patch_box)
        doc["rf_box"] = list(patch.hit.box)
    return doc


def topk_json(
    result: t.TopKResult, patch_files: Mapping[int, str] | None = None, render: str = "rf"
) -> dict[str, Any]:
    """The `maxact topk --json` document, best first; patch_files maps rank -> file name."""
    files = patch_files or {}
    return {
        "model": result.model,
        "layer": result.layer,
        "channel": result.channel,
        "k": result.k,
        "mode": result.mode,
        "images_scanned": result.images_scanned,
        "results": [
            patch_json(patch, files.get(patch.hit.rank), render) for patch in result.patches
        ],
        "preprocessing": result.preprocessing.to_dict() if result.preprocessing else None,
    }


def dumps(doc: Any) -> str:
    """The one JSON document printed on stdout: indented for people, stable for scripts."""
    return json.dumps(doc, indent=2, ensure_ascii=False)


def scan_json(info: t.ScanSummary) -> dict[str, Any]:
    """The `scan get` document, plus k, mode, images_failed and error (additive)."""
    return {
        "id": info.id,
        "state": info.state,
        "images_done": info.images_done,
        "images_total": info.images_total,
        "model": info.model,
        "layers": list(info.layers),
        "dataset": info.dataset,
        "k": info.k,
        "mode": info.mode,
        "images_failed": info.images_failed,
        "error": info.error,
        "preprocessing": info.preprocessing.to_dict() if info.preprocessing else None,
    }


def scans_json(scans: Iterable[t.ScanSummary]) -> dict[str, Any]:
    return {"scans": [scan_json(s) for s in scans]}


def class_channel_json(channel: t.ClassChannel) -> dict[str, Any]:
    return {
        "channel": channel.channel,
        "mean": channel.mean,
        "contrast": channel.contrast,
        "selectivity": channel.selectivity,
    }


def classes_json(answer: t.LayerClassAnswer) -> dict[str, Any]:
    return {
        "scan": answer.scan,
        "layer": answer.layer,
        "images_scanned": answer.images_scanned,
        "channels": answer.channels,
        "dead": list(answer.dead),
        "non_selective": list(answer.non_selective),
        "classes": [
            {
                "name": c.name,
                "images": c.images,
                "selective_channels": list(c.selective_channels),
                "top_channels": [class_channel_json(x) for x in c.top_channels],
            }
            for c in answer.classes
        ],
        "uncovered": list(answer.uncovered),
        "confusable": [
            {"classes": list(p.classes), "similarity": p.similarity} for p in answer.confusable
        ],
    }


def class_json(
    result: t.ClassChannels, files: dict[int, dict[int, str]] | None = None, render: str = "rf"
) -> dict[str, Any]:
    """The `class --json` document; each result as in `topk` (under mask: `box` the mask's,
    `rf_box` the receptive field)."""
    files = files or {}
    return {
        "scan": result.scan,
        "layer": result.layer,
        "class": result.class_name,
        "images": result.images,
        "top_channels": [
            {
                **class_channel_json(entry.channel),
                "results": [
                    patch_json(p, files.get(entry.channel.channel, {}).get(p.hit.rank), render)
                    for p in entry.patches
                ],
            }
            for entry in result.channels
        ],
    }


def compare_json(result: t.ScanComparison) -> dict[str, Any]:
    return {
        "a": result.a,
        "b": result.b,
        "layer": result.layer,
        "k": result.k,
        "channels": [
            {
                "channel": c.channel,
                "overlap": c.overlap,
                "firing_rate": list(c.firing_rate),
                "mean": list(c.mean),
            }
            for c in result.channels
        ],
    }


def models_json(models: Iterable[t.ModelSummary]) -> dict[str, Any]:
    """The `maxact models --json` document."""
    return {
        "models": [{"name": m.name, "size_bytes": m.size_bytes, "loaded": m.loaded} for m in models]
    }


def datasets_json(datasets: Iterable[t.DatasetSummary]) -> dict[str, Any]:
    """The `maxact datasets --json` document."""
    return {
        "datasets": [
            {
                "name": d.name,
                "image_count": d.image_count,
                "labels": list(d.labels),
                "size_bytes": d.size_bytes,
                "unreadable": d.unreadable,
            }
            for d in datasets
        ]
    }


def add_layer_labels(doc: dict[str, Any], names: t.ClassNames) -> dict[str, Any]:
    """The `layers` document with "labels" on the named flat output's entry."""
    for layer in doc.get("layers", []):
        if names.names and layer.get("name") == names.layer:
            layer["labels"] = list(names.names)
    return doc


def deleted_json(scan_id: str) -> dict[str, Any]:
    """The `scan delete --json` document."""
    return {"id": scan_id, "deleted": True}


def statistics_json(stats: t.LayerStatistics) -> dict[str, Any]:
    """A layer's stored statistics, channel by channel (the typed LayerStatistics as JSON)."""
    return {
        "images_scanned": stats.images_scanned,
        "channels": [dataclasses.asdict(c) for c in stats.channels],
        "top_channels_per_class": {
            name: list(channels) for name, channels in stats.top_channels_per_class.items()
        },
    }


def neuron_result(
    scan: t.ScanSummary,
    layer: str,
    channel: int,
    k: int,
    bottom: bool,
    patches: Iterable[t.Patch],
    images_scanned: int,
) -> t.TopKResult:
    """A finished scan's top-k (or bottom-k) of one channel as a TopKResult, so the topk
    writers (JSON, table, rank_N.png + montage.png) serve it unchanged."""
    return t.TopKResult(
        model=scan.model,
        layer=layer,
        channel=channel,
        k=k,
        mode=scan.mode,
        bottom=bottom,
        images_scanned=images_scanned,
        images_failed=scan.images_failed,
        patches=tuple(sorted(patches, key=lambda p: p.hit.rank)),
        preprocessing=scan.preprocessing,
    )


def quantile_json(
    model: str,
    layer: str,
    channel: int,
    quantile: float,
    value: float,
    examples: Iterable[tuple[int, str, float]],
    images_scanned: int,
) -> dict[str, Any]:
    """`maxact neuron --quantile Q --json`: the images (rank, image, score) whose response is
    nearest the channel's Q-quantile `value` (NaN: no answer, null)."""
    results = [{"rank": r, "image": i, "score": s} for r, i, s in examples]
    return {
        "model": model,
        "layer": layer,
        "channel": channel,
        "k": len(results),
        "mode": "image",
        "images_scanned": images_scanned,
        "quantile": quantile,
        "quantile_value": None if value != value else value,
        "results": results,
    }


class LabelRow(Protocol):
    """A channel's best class from the per-image responses (client or server record)."""

    @property
    def channel(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def auc(self) -> float: ...
    @property
    def p_value(self) -> float: ...
    @property
    def purity(self) -> float: ...


def _number(value: float) -> float | None:
    """NaN (no answer) as JSON null."""
    return None if math.isnan(value) else value


def histogram_json(
    scan: str, layer: str, channel: int, edges: Iterable[float], counts: Iterable[int]
) -> dict[str, Any]:
    """`maxact histogram --json`."""
    return {
        "scan": scan,
        "layer": layer,
        "channel": channel,
        "edges": list(edges),
        "counts": list(counts),
    }


def labels_json(scan: str, layer: str, labels: Iterable[LabelRow]) -> dict[str, Any]:
    """`maxact labels --json`: a constant channel's label and NaN figures are null."""
    return {
        "scan": scan,
        "layer": layer,
        "channels": [
            {
                "channel": found.channel,
                "label": found.label or None,
                "auc": _number(found.auc),
                "p_value": _number(found.p_value),
                "purity": _number(found.purity),
            }
            for found in labels
        ],
    }


def similar_json(channel: int, similar: Iterable[tuple[int, float]]) -> dict[str, Any]:
    """`maxact similar --json`."""
    return {"channel": channel, "similar": [{"channel": c, "correlation": r} for c, r in similar]}
