"""layers/<dir>/classes.html: a labelled scan's class answer for one layer, classes as rows
with their top channels' best patches and uncovered classes flagged.

A separate page (and module) beside the per-channel page: it answers "which channels fire for
this class?" where the channel page answers "what does this channel fire for?".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from maxact.client import types as t
from maxact.client.defaults import capped_k

CLASSES_PAGE = "classes.html"
TOP_CHANNELS = 5
PATCHES_PER_CHANNEL = 3
TILE = 64
SELECTIVE = 0.5


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
    answer: t.LayerClassAnswer = client.analysis.classes(scan.id, layer, SELECTIVE, TOP_CHANNELS)
    patches_dir = folder / "classes"
    patches_dir.mkdir(parents=True, exist_ok=True)
    k = capped_k(scan.k, PATCHES_PER_CHANNEL)
    written: dict[int, list[_Patch]] = {}
    rows = []
    for entry in answer.classes:
        result = client.analysis.class_channels(
            scan.id,
            layer,
            entry.name,
            top=TOP_CHANNELS,
            k=k,
            patch_size=TILE,
            render=render,
            mask_quantile=mask_quantile,
        )
        channels = []
        for found in result.channels:
            channel = found.channel.channel
            if channel not in written:
                written[channel] = []
                for patch in found.patches:
                    name = f"classes/c{channel}_r{patch.hit.rank}.png"
                    (folder / name).write_bytes(patch.png)
                    written[channel].append(_Patch(patch.hit.rank, name, patch.hit.image))
            channels.append(
                _Channel(
                    channel=channel,
                    contrast=found.channel.contrast,
                    selectivity=found.channel.selectivity,
                    selective=channel in entry.selective_channels,
                    patches=written[channel],
                )
            )
        rows.append(
            _Row(
                name=entry.name,
                images=entry.images,
                selective=list(entry.selective_channels),
                uncovered=entry.name in answer.uncovered,
                channels=channels,
            )
        )
    html = _ENV.get_template("classes.html.j2").render(
        layer=layer,
        scan=scan.id,
        model=scan.model,
        dataset=scan.dataset,
        images=answer.images_scanned,
        threshold=SELECTIVE,
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
