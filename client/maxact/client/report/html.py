"""HTML of the `maxact report` gallery: pure functions from plain data to self-contained pages.

No CDN, no external file but the PNGs next to the pages: CSS and JS are inline, so the folder
opens from disk (file://) in any browser. Layer pages stay fast with hundreds of channels:
images load lazily with fixed box sizes (no layout shifts), sorting moves existing rows.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from maxact.client.scans import ChannelStatistics

TILE = 88  # CSS pixels of a patch box on a layer page
NON_SELECTIVE = 0.2  # below this class-selectivity index a (labelled, live) neuron is "flat"
TOP_CLASSES = 3


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
    extra: dict[str, str] = field(default_factory=dict)


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def fmt(value: float) -> str:
    value += 0.0  # -0.0 -> 0.0
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def shape_text(shape: Sequence[int]) -> str:
    return "×".join("?" if d < 0 else str(d) for d in shape) or "-"


def non_selective(stats: ChannelStatistics, labelled: bool) -> bool:
    return labelled and not stats.dead and stats.selectivity < NON_SELECTIVE


STYLE = """
:root { --ink:#1d2129; --muted:#667085; --line:#e4e7ec; --bg:#f8f9fb; --bar:#3b82f6;
        --dead:#b42318; --flat:#b54708; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
       margin: 0; background: var(--bg); }
header { padding: 12px 20px; background: #fff; border-bottom: 1px solid var(--line);
         position: sticky; top: 0; z-index: 2; }
header h1 { font-size: 18px; margin: 0 0 4px; word-break: break-all; }
header .meta { color: var(--muted); }
main { padding: 12px 20px 40px; }
a { color: #1d4ed8; }
table.catalogue { border-collapse: collapse; background: #fff; }
table.catalogue th, table.catalogue td { border-bottom: 1px solid var(--line); padding: 4px 10px;
  text-align: left; vertical-align: middle; }
table.catalogue td.name { font-family: ui-monospace, monospace; word-break: break-all; }
.controls { display: flex; gap: 14px; flex-wrap: wrap; align-items: center; margin-top: 8px; }
.controls input[type=search] { width: 16em; }
.neuron { display: flex; gap: 12px; background: #fff; border: 1px solid var(--line);
          border-radius: 6px; padding: 8px; margin: 8px 0; content-visibility: auto;
          contain-intrinsic-size: auto 140px; }
.neuron[hidden] { display: none; }
.info { width: 210px; flex: none; }
.info .channel { font-weight: 600; font-size: 15px; }
.info dl { display: grid; grid-template-columns: auto 1fr; gap: 0 8px; margin: 4px 0; }
.info dt { color: var(--muted); } .info dd { margin: 0; }
.badge { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 9px;
         color: #fff; margin-left: 4px; vertical-align: middle; }
.badge.dead { background: var(--dead); } .badge.flat { background: var(--flat); }
.classes { margin-top: 4px; }
.cls { display: grid; grid-template-columns: 6em 1fr 2.6em; gap: 4px; align-items: center;
       font-size: 12px; }
.cls .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.cls .track { background: var(--line); height: 8px; border-radius: 4px; }
.cls .fill { background: var(--bar); height: 8px; border-radius: 4px; }
.cls .count { color: var(--muted); text-align: right; }
.patches { display: flex; gap: 8px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; width: %(tile)dpx; text-align: center; }
figure img { width: %(tile)dpx; height: %(tile)dpx; object-fit: contain; background: #eee;
             image-rendering: pixelated; display: block; }
figcaption { font-size: 12px; color: var(--muted); white-space: nowrap; overflow: hidden;
             text-overflow: ellipsis; }
img.overview { max-width: 100%%; border: 1px solid var(--line); background: #fff; }
.thumb { height: 48px; image-rendering: pixelated; border: 1px solid var(--line); }
""" % {"tile": TILE}  # noqa: UP031 - CSS braces make str.format unreadable


SCRIPT = """
(function () {
  "use strict";
  var list = document.getElementById("neurons");
  var rows = Array.prototype.slice.call(list.children);
  var sortKey = document.getElementById("sort");
  var descending = document.getElementById("descending");
  var hideDead = document.getElementById("hide-dead");
  var filter = document.getElementById("filter");
  var count = document.getElementById("count");
  function value(row, key) { return parseFloat(row.getAttribute("data-" + key)); }
  function apply() {
    var key = sortKey.value, sign = descending.checked ? -1 : 1;
    var sorted = rows.slice().sort(function (a, b) {
      var d = (value(a, key) - value(b, key)) * sign;
      return d !== 0 && !isNaN(d) ? d : value(a, "channel") - value(b, "channel");
    });
    var query = filter.value.trim().toLowerCase();
    var shown = 0, fragment = document.createDocumentFragment();
    sorted.forEach(function (row) {
      var hide = (hideDead.checked && row.getAttribute("data-dead") === "1") ||
                 (query !== "" && row.getAttribute("data-text").indexOf(query) < 0);
      row.hidden = hide;
      if (!hide) { shown += 1; }
      fragment.appendChild(row);
    });
    list.appendChild(fragment);
    count.textContent = shown + " of " + rows.length + " neurons";
  }
  sortKey.addEventListener("change", function () {
    descending.checked = sortKey.value !== "channel";
    apply();
  });
  [descending, hideDead].forEach(function (el) { el.addEventListener("change", apply); });
  filter.addEventListener("input", apply);
  apply();
})();
"""


def _page(title: str, header: str, body: str, script: str = "") -> str:
    tail = f"<script>{script}</script>\n" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n"
        # an inline empty icon: no request for /favicon.ico (a console error under file://)
        '<link rel="icon" href="data:,">\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n<header>{header}</header>\n"
        f"<main>\n{body}\n</main>\n{tail}</body>\n</html>\n"
    )


def _scan_meta(scan: ScanHeader) -> str:
    failed = f", {scan.images_failed} skipped" if scan.images_failed else ""
    return (
        f"scan <b>{esc(scan.id)}</b> · model <b>{esc(scan.model)}</b> · dataset "
        f"<b>{esc(scan.dataset)}</b> · {scan.images_done} images{failed} · top-{scan.k} "
        f"({esc(scan.mode)} mode)"
    )


def index_page(
    scan: ScanHeader, layers: Sequence[LayerSummary], catalogue: Sequence[ModelLayerRow], note: str
) -> str:
    """index.html: the scanned layers (links, overviews) and the model's whole catalogue."""
    header = f"<h1>maxact report</h1><div class='meta'>{_scan_meta(scan)}</div>"
    rows = []
    for layer in layers:
        page = f"layers/{layer.directory}/index.html"
        overview = f"layers/{layer.directory}/overview.png"
        selective = f"{layer.non_selective} non-selective" if layer.labelled else "no labels"
        rows.append(
            "<tr class='layer'>"
            f"<td class='name'><a href='{page}'>{esc(layer.name)}</a></td>"
            f"<td>{esc(layer.op or '(input)')}</td><td>{shape_text(layer.shape)}</td>"
            f"<td>{esc(layer.field)}{' · global context' if layer.global_context else ''}</td>"
            f"<td>{layer.channels}</td><td>{layer.dead} dead · {selective}</td>"
            f"<td><a href='{overview}'><img class='thumb' src='{overview}' loading='lazy' "
            f"alt='overview of {esc(layer.name)}'></a></td></tr>"
        )
    scanned = (
        "<h2>Scanned layers</h2>\n<table class='catalogue' id='scanned'>"
        "<tr><th>Layer</th><th>Op</th><th>Shape</th><th>Receptive field</th><th>Channels</th>"
        "<th>Neurons</th><th>Overview (top-1 of every channel)</th></tr>\n"
        + "\n".join(rows)
        + "</table>"
    )
    model_rows = []
    for row in catalogue:
        name = esc(row.name)
        if row.directory is not None:
            name = f"<a href='layers/{row.directory}/index.html'>{name}</a>"
        model_rows.append(
            f"<tr><td class='name'>{name}</td><td>{esc(row.op or '(input)')}</td>"
            f"<td>{shape_text(row.shape)}</td><td>{esc(row.field)}</td>"
            f"<td>{'yes' if row.global_context else ''}</td></tr>"
        )
    model = (
        f"<details><summary>All {len(catalogue)} layers of {esc(scan.model)}</summary>\n"
        "<table class='catalogue' id='model-layers'><tr><th>Layer</th><th>Op</th><th>Shape</th>"
        "<th>Receptive field (size / stride / padding)</th><th>Global</th></tr>\n"
        + "\n".join(model_rows)
        + "</table></details>"
    )
    note_html = f"<p class='meta'>{esc(note)}</p>" if note else ""
    return _page(f"maxact report {scan.id}", header, f"{scanned}\n{note_html}\n{model}")


def _class_bars(stats: ChannelStatistics, k: int) -> str:
    ranked = sorted(stats.top_class_histogram.items(), key=lambda item: (-item[1], item[0]))
    bars = []
    for name, n in ranked[:TOP_CLASSES]:
        width = 100.0 * n / max(1, k)
        bars.append(
            f"<div class='cls' title='{esc(name)}: {n} of the top-{k} images'>"
            f"<span class='name'>{esc(name)}</span><span class='track'>"
            f"<span class='fill' style='display:block;width:{width:.0f}%'></span></span>"
            f"<span class='count'>{n}/{k}</span></div>"
        )
    return f"<div class='classes'>{''.join(bars)}</div>" if bars else ""


def _neuron_row(entry: NeuronEntry, labelled: bool, k: int) -> str:
    s = entry.stats
    badges = ""
    if s.dead:
        badges += (
            "<span class='badge dead' title='never fires (max ≤ 0 on every image)'>dead</span>"
        )
    if non_selective(s, labelled):
        badges += (
            f"<span class='badge flat' title='class selectivity below {NON_SELECTIVE}'>"
            "non-selective</span>"
        )
    words = [f"c{s.channel}", str(s.channel), entry.label]
    if s.dead:
        words.append("dead")
    if non_selective(s, labelled):
        words.append("non-selective")
    if s.preferred_class:
        words.append(s.preferred_class)
    words.extend(s.top_class_histogram)
    text = " ".join(words).lower()
    facts = [
        ("max", fmt(s.max_max)),
        ("mean max", fmt(s.mean_max)),
        ("firing", f"{100 * s.firing_rate:.1f}%"),
    ]
    if labelled:
        facts.append(("selectivity", f"{s.selectivity:.3f}"))
        if s.preferred_class:
            facts.append(("prefers", esc(s.preferred_class)))
    dl = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    figures = "".join(
        f"<figure><img src='{esc(p.file)}' loading='lazy' decoding='async' width='{TILE}' "
        f"height='{TILE}' alt='channel {s.channel} rank {p.rank}' title='{esc(p.image)}'>"
        f"<figcaption>#{p.rank} {fmt(p.score)}</figcaption></figure>"
        for p in entry.patches
    )
    data = {
        "channel": s.channel,
        "max": repr(float(s.max_max)),
        "mean": repr(float(s.mean_max)),
        "firing": repr(float(s.firing_rate)),
        "selectivity": repr(float(s.selectivity)),
        "dead": "1" if s.dead else "0",
        "text": esc(text),
    }
    attributes = " ".join(f"data-{key}='{value}'" for key, value in data.items())
    return (
        f"<section class='neuron' id='c{s.channel}' {attributes}>"
        f"<div class='info'><div class='channel'>channel {s.channel}"
        f"{' · ' + esc(entry.label) if entry.label else ''}{badges}</div>"
        f"<dl>{dl}</dl>{_class_bars(s, k)}</div>"
        f"<div class='patches'>{figures}</div></section>"
    )


CLASSES_LINK = "<a href='classes.html'>classes (which channels fire for which class)</a> · "


def layer_page(scan: ScanHeader, layer: LayerSummary, neurons: Sequence[NeuronEntry]) -> str:
    """layers/<dir>/index.html: a row per channel with its top-k patches and figures."""
    header = (
        f"<h1>{esc(layer.name)}</h1><div class='meta'><a href='../../index.html'>all layers</a>"
        f" · {esc(layer.op or '(input)')} · shape {shape_text(layer.shape)} · receptive field "
        f"{esc(layer.field)}{' · global context' if layer.global_context else ''} · "
        f"<a href='overview.png'>overview (top-1 of every channel)</a> · "
        f"{CLASSES_LINK if layer.labelled else ''}"
        f"{_scan_meta(scan)}</div>"
        "<div class='controls'>"
        "<label>sort by <select id='sort'><option value='channel'>channel</option>"
        "<option value='max'>max</option><option value='mean'>mean max</option>"
        "<option value='firing'>firing rate</option>"
        "<option value='selectivity'>selectivity</option></select></label>"
        "<label><input type='checkbox' id='descending'> descending</label>"
        "<label><input type='checkbox' id='hide-dead'> hide dead</label>"
        "<label>filter <input type='search' id='filter' "
        "placeholder='channel, class, dead, non-selective'></label>"
        "<span id='count' class='meta'></span></div>"
    )
    intro = (
        f"<p class='meta'>{layer.channels} channels · {layer.dead} dead"
        + (
            f" · {layer.non_selective} non-selective (selectivity &lt; {NON_SELECTIVE})"
            if layer.labelled
            else " · the dataset has no labels: no class figures"
        )
        + "</p>"
    )
    rows = "\n".join(_neuron_row(entry, layer.labelled, scan.k) for entry in neurons)
    body = f"{intro}\n<div id='neurons'>\n{rows}\n</div>"
    return _page(f"{layer.name} · maxact report {scan.id}", header, body, SCRIPT)


def mapping_json(scan: dict[str, object], layers: Sequence[LayerSummary]) -> str:
    """report.json: the scan and which folder holds which layer (names are not file names)."""
    doc = {
        "scan": scan,
        "layers": [
            {
                "name": layer.name,
                "directory": f"layers/{layer.directory}",
                "page": f"layers/{layer.directory}/index.html",
                "overview": f"layers/{layer.directory}/overview.png",
                "channels": layer.channels,
                "dead": layer.dead,
            }
            for layer in layers
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
