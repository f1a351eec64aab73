"""Human-readable tables of typed results, for the CLI and the report (the --json documents
are in json_out)."""

from __future__ import annotations

from collections.abc import Sequence

from maxact.client import types as t
from maxact.common.documents import number
from maxact.common.preprocessing import Preprocessing


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def _pair(values: Sequence[float]) -> str:
    return "x".join(str(number(v)) for v in values)


def geometry_text(geometry: t.FieldGeometry) -> str:
    return (
        f"size {_pair(geometry.size)}  stride {_pair(geometry.stride)}"
        f"  padding {_pair(geometry.padding)}"
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def datasets_text(datasets: Sequence[t.DatasetSummary]) -> str:
    if not datasets:
        return "no datasets under the server's data root"
    rows = [
        (d.name, d.image_count, _size(d.size_bytes), ", ".join(d.labels) or "-")
        if not d.unreadable
        else (d.name, "-", "-", f"unreadable: {d.unreadable}")
        for d in datasets
    ]
    return table(("DATASET", "IMAGES", "SIZE", "LABELS"), rows)


def models_text(models: Sequence[t.ModelSummary]) -> str:
    if not models:
        return "no models under the server's model root"
    rows = [(m.name, _size(m.size_bytes), "yes" if m.loaded else "no") for m in models]
    return table(("MODEL", "SIZE", "LOADED"), rows)


def layers_text(info: t.ModelInfo) -> str:
    rows = []
    for layer in info.layers:
        rf = layer.receptive_field
        if rf is None:
            field = f"- ({layer.field_error})" if layer.field_error else "-"
        elif not rf.spatial:
            field = "whole image"
        else:
            g = rf.geometry
            field = f"{_pair(g.size)} / {_pair(g.stride)} / {_pair(g.padding)}"
            if rf.tokens is not None:
                field += f"  {tokens_text(rf.tokens)}"
        shape = "x".join(str(d) for d in layer.shape) or "?"
        rows.append(
            (layer.name, layer.op or "(input)", shape, field, "yes" if layer.global_context else "")
        )
    head = f"model {info.name}  input {info.input_height}x{info.input_width}\n"
    body = table(("LAYER", "OP", "SHAPE", "RF SIZE / STRIDE / PADDING", "GLOBAL"), rows)
    unshaped = [layer.name for layer in info.layers if not layer.shape]
    if unshaped:  # a size the model does not take: say so instead of listing fewer
        body += (
            f"\n{len(unshaped)} of {len(info.layers)} tensors have no shape at input "
            f"{info.input_height}x{info.input_width} (shape ?): the model may not take this size"
        )
    return head + body


def tokens_text(tokens: t.TokenGrid) -> str:
    """'grid 14x14 + 1 prefix' for a token sequence (prefix: CLS, registers)."""
    text = f"grid {tokens.height}x{tokens.width}"
    return text + (f" + {tokens.prefix} prefix" if tokens.prefix else "")


MAX_GROUP_LINES = 8  # the text output summarises; --json keeps every group and interval


def rf_text(info: t.FieldInfo) -> str:
    """A summary of a few lines (an early layer's --json has an interval per unit row/column)."""
    rf = info.receptive_field
    lines = [
        f"model   {info.model}",
        f"layer   {info.layer}  shape {'x'.join(str(d) for d in info.shape)}",
        f"input   {info.input_name}  {info.input_height}x{info.input_width}",
        f"field   {geometry_text(rf.geometry)}",
    ]
    if len(rf.channel_groups) > 1:
        groups = rf.channel_groups
        shown = groups if len(groups) <= MAX_GROUP_LINES else groups[: MAX_GROUP_LINES - 1]
        for g in shown:
            lines.append(
                f"  channels {g.first_channel}-{g.last_channel}: {geometry_text(g.geometry)}"
            )
        if len(shown) < len(groups):
            lines.append(f"  ... {len(groups) - len(shown)} more channel groups (--json lists all)")
    if rf.spatial and rf.rows and rf.cols:
        lines.append(
            f"units   {len(rf.rows)}x{len(rf.cols)}: row 0 sees input rows "
            f"{rf.rows[0][0]}..{rf.rows[0][1]}, the last row {rf.rows[-1][0]}..{rf.rows[-1][1]}"
            " (--json lists every unit's interval)"
        )
    if rf.tokens is not None:
        lines.append(f"tokens  {tokens_text(rf.tokens)}: a unit is (row, col) of the grid")
    if rf.global_context:
        lines.append("global  some channels also depend on the whole image (global path)")
    if info.box is not None:
        y0, x0, y1, x1 = info.box
        lines.append(f"box     rows {y0}..{y1}  cols {x0}..{x1}  (exact, half-open)")
    if info.box_unclipped is not None:
        y0, x0, y1, x1 = info.box_unclipped
        lines.append(f"formula rows {y0}..{y1}  cols {x0}..{x1}  (unclipped)")
    return "\n".join(lines)


def _box_text(box: tuple[int, int, int, int] | None) -> str:
    if box is None:
        return ""
    y0, x0, y1, x1 = box
    return f"[{y0}:{y1}, {x0}:{x1}]"


def topk_text(
    result: t.TopKResult, patch_files: dict[int, str] | None = None, render: str = "rf"
) -> str:
    """The table of `topk` / `neuron`; under `--render mask` both boxes, labelled as in the
    JSON: `RF BOX` (the receptive field, `rf_box`) and `MASK BOX` (what the patch crops,
    `box`)."""
    files = patch_files or {}
    which = "bottom" if result.bottom else "top"
    head = (
        f"{which}-{result.k} of {result.model} {result.layer} channel {result.channel}"
        f" ({result.mode} mode, {result.images_scanned} images"
        + (f", {result.images_failed} skipped" if result.images_failed else "")
        + ")"
    )
    mask = render == "mask"
    rows = []
    for patch in result.patches:
        hit = patch.hit
        boxes = [_box_text(hit.box)] + ([_box_text(patch.patch_box)] if mask else [])
        rows.append(
            (
                f"#{hit.rank}",
                f"{hit.score + 0.0:.4g}",
                hit.image,
                f"{hit.unit[0]},{hit.unit[1]}",
                *boxes,
                files.get(hit.rank, ""),
            )
        )
    box_heads = ("RF BOX (ORIGINAL PX)", "MASK BOX") if mask else ("BOX (ORIGINAL PX)",)
    body = table(("RANK", "SCORE", "IMAGE", "UNIT Y,X", *box_heads, "PATCH"), rows)
    skipped = "".join(f"\nskipped {s.image}: {s.reason}" for s in result.skipped)
    if result.preprocessing is not None:
        head += f"\npreprocessing {preprocessing_text(result.preprocessing)}"
    return f"{head}\n{body}{skipped}"


def preprocessing_text(prep: Preprocessing) -> str:
    """One line: the fields that are set, `name value`, lists joined by x (sizes) or ,."""
    parts = []
    for name, value in prep.to_dict().items():
        if name in ("size", "center_crop", "letterbox"):
            value = "x".join(str(v) for v in value)
        elif isinstance(value, list):
            value = ",".join(f"{v:.4g}" for v in value)
        elif isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{name} {value}")
    return "  ".join(parts)


# ---------------------------------------------------------------- class answers

LISTED = 12  # channels named in a sentence before "..."


def _listing(channels: Sequence[int]) -> str:
    shown = ", ".join(str(c) for c in channels[:LISTED])
    return shown + (", ..." if len(channels) > LISTED else "")


def class_sentence(answer: t.ClassAnswer) -> str:
    """One class's answer as a sentence."""
    tops = ", ".join(f"{x.channel} (+{x.contrast:.3g})" for x in answer.top_channels[:5])
    fires_most = (
        f"; fires most: {tops}" if tops else "; no channel fires more for it than for the rest"
    )
    selective = answer.selective_channels
    if not selective:
        return f"no channel is selective for {answer.name!r} ({answer.images} images){fires_most}"
    best = (
        f", best {answer.selective[0].channel} (selectivity {answer.selective[0].selectivity:.2f})"
        if answer.selective
        else ""
    )
    count = len(selective)
    return (
        f"class {answer.name!r} ({answer.images} images): {count} selective "
        f"channel{'s' if count != 1 else ''} ({_listing(selective)}){best}{fires_most}"
    )


def classes_text(answer: t.LayerClassAnswer, selective: float) -> str:
    lines = [
        f"layer {answer.layer} of scan {answer.scan}: {answer.channels} channels, "
        f"{answer.images_scanned} images, {len(answer.classes)} classes "
        f"(selective: selectivity >= {selective:g})"
    ]
    lines += [class_sentence(c) for c in answer.classes]
    lines.append(
        f"{len(answer.non_selective)} of {answer.channels} channels fire for everything "
        f"(firing rate >= 0.9, selectivity < 0.1)"
        + (f": {_listing(answer.non_selective)}" if answer.non_selective else "")
    )
    lines.append(
        f"{len(answer.dead)} of {answer.channels} channels are dead (never fire)"
        + (f": {_listing(answer.dead)}" if answer.dead else "")
    )
    if answer.uncovered:
        names = ", ".join(repr(n) for n in answer.uncovered)
        lines.append(f"uncovered (no selective channel): {names}")
    else:
        lines.append("every class has a selective channel")
    if answer.confusable:
        pairs = ", ".join(
            f"{p.classes[0]!r} ~ {p.classes[1]!r} ({p.similarity:.2f})"
            for p in answer.confusable[:5]
        )
        lines.append(f"most confusable classes: {pairs}")
    elif len(answer.classes) < 3:
        lines.append(
            "most confusable classes: needs at least three classes (the centred profiles of "
            "two are always opposite)"
        )
    return "\n".join(lines)
