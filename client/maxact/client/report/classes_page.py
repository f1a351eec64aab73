"""layers/<dir>/classes.html: a labelled scan's class answer for one layer, classes as rows
with their top channels' best patches and uncovered classes flagged.

A separate page (and module) beside the per-channel page: it answers "which channels fire for
this class?" where the channel page answers "what does this channel fire for?".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from maxact.client import types as t
from maxact.common.defaults import DEFAULT_SELECTIVE, capped_k

CLASSES_PAGE = "classes.html"
TOP_CHANNELS = 5
PATCHES_PER_CHANNEL = 3
TILE = 64


@dataclass
class _Patch:
    rank: int
    file: str
    image: str


@dataclass
class _Channel:
    channel: int
    contrast: float
    selectivity: float
    selective: bool
    patches: list[_Patch] = field(default_factory=list)


@dataclass
class _Row:
    name: str
    images: int
    selective: list[int]
    uncovered: bool
    channels: list[_Channel]


# one environment for the module: it keeps the compiled templates between layers
_ENV = Environment(
    loader=PackageLoader("maxact.client.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)


def write_classes_page(
    client: Any,
    scan: Any,
    layer: str,
    folder: Path,
    render: str = "rf",
    mask_quantile: float | None = None,
) -> Path:
    """Query the class answer and each class's top channels with patches rendered as
    `render` (the layer page's: mask where the field exceeds half the input, so deep layers
    do not show grey fields); write the page and its patches (classes/c<C>_r<R>.png) into
    `folder`; returns the page's path."""
    answer: t.LayerClassAnswer = client.analysis.classes(
        scan.id, layer, DEFAULT_SELECTIVE, TOP_CHANNELS
    )
    patches_dir = folder / "classes"
    patches_dir.mkdir(parents=True, exist_ok=True)
    k = capped_k(scan.k, PATCHES_PER_CHANNEL)
    written: dict[int, list[_Patch]] = {}  # a channel's patches, written once for all classes
    rows = [
        _class_row(
            client, scan.id, layer, entry, answer, k, folder, written, (render, mask_quantile)
        )
        for entry in answer.classes
    ]
    html = _ENV.get_template("classes.html.j2").render(
        layer=layer,
        scan=scan.id,
        model=scan.model,
        dataset=scan.dataset,
        images=answer.images_scanned,
        threshold=DEFAULT_SELECTIVE,
        channels=answer.channels,
        classes=answer.classes,
        uncovered=answer.uncovered,
        non_selective=answer.non_selective,
        dead=answer.dead,
        confusable=answer.confusable,
        rows=rows,
        tile=TILE,
    )
    page = folder / CLASSES_PAGE
    page.write_text(html, encoding="utf-8")
    return page


def _class_row(
    client: Any,
    scan_id: str,
    layer: str,
    entry: t.ClassAnswer,
    answer: t.LayerClassAnswer,
    k: int,
    folder: Path,
    written: dict[int, list[_Patch]],
    render: tuple[str, float | None] = ("rf", None),
) -> _Row:
    """One class's row: its top channels from the layer's class answer, each with its patches
    rendered as `render` (mode, mask quantile), asked for and written on the channel's first
    use, whichever class it serves."""
    channels = []
    for found in entry.top_channels:
        channel = found.channel
        if channel not in written:
            mode, quantile = render
            _, patches, _ = client.scans.neuron(
                scan_id, layer, channel, k=k, patch_size=TILE, render=mode, mask_quantile=quantile
            )
            written[channel] = _write_patches(folder, channel, patches)
        channels.append(
            _Channel(
                channel=channel,
                contrast=found.contrast,
                selectivity=found.selectivity,
                selective=channel in entry.selective_channels,
                patches=written[channel],
            )
        )
    return _Row(
        name=entry.name,
        images=entry.images,
        selective=list(entry.selective_channels),
        uncovered=entry.name in answer.uncovered,
        channels=channels,
    )


def _write_patches(folder: Path, channel: int, patches: Sequence[t.Patch]) -> list[_Patch]:
    """classes/c<C>_r<R>.png for each patch of a channel."""
    out = []
    for patch in patches:
        name = f"classes/c{channel}_r{patch.hit.rank}.png"
        (folder / name).write_bytes(patch.png)
        out.append(_Patch(patch.hit.rank, name, patch.hit.image))
    return out


def write_unanswered_page(layer: str, reason: str, folder: Path) -> Path:
    """A classes page that says why the class questions have no answer for this scan."""
    template = _ENV.from_string(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>{{ layer }} · classes</title><link rel='icon' href='data:,'></head><body>"
        "<h1>{{ layer }} · classes</h1><p>{{ reason }}</p>"
        "<p><a href='index.html'>all channels of this layer</a></p></body></html>"
    )
    page = folder / CLASSES_PAGE
    page.write_text(template.render(layer=layer, reason=reason), encoding="utf-8")
    return page
