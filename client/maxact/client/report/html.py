"""HTML of the `maxact report` gallery: jinja2 templates (autoescaped) over plain data.

The templates, CSS and JS are package data (templates/, static/); the static files are copied
next to the pages, so the folder opens from disk (file://) with nothing from the network. A
layer page carries its neurons as JSON and its script draws one page of rows at a time (sort,
filter, paging over the data), so thousands of channels stay responsive; images load lazily
in fixed-size boxes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from maxact.client.scans import ChannelStatistics
from maxact.common.defaults import FIRES_FOR_EVERYTHING_RATE, NON_SELECTIVE_BELOW
from maxact.common.formatting import fmt, shape_text

TILE = 112  # CSS pixels of a patch box on a layer page
PREVIEW_TILE = 72  # CSS pixels of a top-1 patch in the index's preview strip
PREVIEW_COUNT = 10  # top-1 patches of the strongest channels shown per layer on the index
PAGE_SIZE = 50  # neuron rows drawn at once on a layer page
TOP_CLASSES = 3
# (package, file): the stylesheet is shared with the server's web UI, hence in maxact.common
STATIC_FILES = (("maxact.common", "report.css"), ("maxact.client.report", "layer.js"))


@dataclass(frozen=True)
class PatchEntry:
    rank: int
    file: str  # relative to the layer page
    score: float
    image: str


@dataclass(frozen=True)
class NeuronEntry:
    stats: ChannelStatistics
    patches: tuple[PatchEntry, ...]
    label: str = ""  # the class name of a named logits channel
    histogram: tuple[int, ...] = ()  # images per bin of its responses (scans that kept them)

    @property
    def channel(self) -> int:
        return self.stats.channel


@dataclass(frozen=True)
class LayerSummary:
    """A scanned layer as the index and its page describe it."""

    name: str
    directory: str  # safe folder name under layers/
    op: str
    shape: tuple[int, ...]
    field: str  # "size 4x4 / stride 2x2 / padding 0x0", or why there is none
    global_context: bool
    channels: int
    dead: int
    labelled: bool
    non_selective: int
    images_scanned: int
    render: str = "rf"
    # (file relative to the layer folder, channel) of the strongest channels' top-1 patches
    preview: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ModelLayerRow:
    """Any layer of the model (scanned or not) for the index's full catalogue."""

    name: str
    op: str
    shape: tuple[int, ...]
    field: str
    global_context: bool
    directory: str | None = None  # set when the scan covered it


@dataclass(frozen=True)
class ScanHeader:
    id: str
    model: str
    dataset: str
    images_done: int
    images_failed: int
    k: int
    mode: str
    input_size: tuple[int, int] | None = None
    patch_size: int = 0
    extra: dict[str, str] = field(default_factory=dict)


def non_selective(stats: ChannelStatistics, labelled: bool) -> bool:
    """Fires for everything: the same definition as the `classes` answer."""
    return (
        labelled
        and stats.firing_rate >= FIRES_FOR_EVERYTHING_RATE
        and stats.selectivity < NON_SELECTIVE_BELOW
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("maxact.client.report", "templates"),
        autoescape=True,  # every value is text: layer and image names come from users
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["shape"] = shape_text
    return env


_ENV = _environment()


def copy_static(out: Path) -> None:
    """The CSS and JS the pages link to, into out/static/."""
    folder = out / "static"
    folder.mkdir(parents=True, exist_ok=True)
    for package, name in STATIC_FILES:
        source = resources.files(package) / "static" / name
        (folder / name).write_bytes(source.read_bytes())


def index_page(
    scan: ScanHeader, layers: Sequence[LayerSummary], catalogue: Sequence[ModelLayerRow], note: str
) -> str:
    """index.html: the scanned layers (links, previews) and the model's whole catalogue."""
    return _ENV.get_template("index.html").render(
        scan=scan, layers=layers, catalogue=catalogue, note=note, preview_tile=PREVIEW_TILE
    )


def neuron_data(entry: NeuronEntry, labelled: bool) -> dict[str, Any]:
    """One row of a layer page, as the page's script reads it."""
    s = entry.stats
    flat = non_selective(s, labelled)
    ranked = sorted(s.top_class_histogram.items(), key=lambda item: (-item[1], item[0]))
    words = [f"c{s.channel}", str(s.channel), entry.label]
    words += ["dead"] if s.dead else []
    words += ["non-selective"] if flat else []
    words += [s.preferred_class] if s.preferred_class else []
    words += list(s.top_class_histogram)
    return {
        "channel": s.channel,
        "label": entry.label,
        "hist": list(entry.histogram),
        "max": float(s.max_max),
        "mean": float(s.mean_max),
        "firing": float(s.firing_rate),
        "selectivity": float(s.selectivity),
        "dead": bool(s.dead),
        "flat": flat,
        "prefers": s.preferred_class if labelled else "",
        "classes": [[name, n] for name, n in ranked[:TOP_CLASSES]],
        "text": " ".join(w for w in words if w).lower(),
        "patches": [[p.file, p.rank, fmt(p.score), p.image] for p in entry.patches],
    }


def layer_page(scan: ScanHeader, layer: LayerSummary, neurons: Sequence[NeuronEntry]) -> str:
    """layers/<dir>/index.html: a row per channel with its top-k patches and figures."""
    data = [neuron_data(entry, layer.labelled) for entry in neurons]
    settings = {
        "k": scan.k,
        "tile": TILE,
        "pageSize": PAGE_SIZE,
        "labelled": layer.labelled,
        "nonSelective": NON_SELECTIVE_BELOW,
        "firesForEverything": FIRES_FOR_EVERYTHING_RATE,
    }
    return _ENV.get_template("layer.html").render(
        scan=scan,
        layer=layer,
        neurons=data,
        settings=settings,
        non_selective=NON_SELECTIVE_BELOW,
        fires_for_everything=FIRES_FOR_EVERYTHING_RATE,
    )


def render(template: str, **values: Any) -> str:
    """Any of the package's templates, autoescaped (values are user data)."""
    return _ENV.get_template(template).render(**values)


def mapping_json(scan: dict[str, object], layers: Sequence[LayerSummary]) -> str:
    """report.json: the scan and which folder holds which layer (names are not file names)."""
    doc = {
        "scan": scan,
        "layers": [
            {
                "name": layer.name,
                "directory": f"layers/{layer.directory}",
                "page": f"layers/{layer.directory}/index.html",
                "overview": f"layers/{layer.directory}/overview.jpg",
                "channels": layer.channels,
                "dead": layer.dead,
                "render": layer.render,
            }
            for layer in layers
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
