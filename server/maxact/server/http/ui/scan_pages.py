"""The scan, layer and neuron pages and the patch images they show. A scan that has not
finished shows its live progress; the page swaps its answers in when the scan ends."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from maxact.common.kinds import RENDER_MODES, ScanState, TopKKind
from maxact.common.statistics import LayerStatistics
from maxact.server.core.neurons import layer_statistics, stored_rankings
from maxact.server.errors import invalid_argument
from maxact.server.http.ui import responses_parts as parts
from maxact.server.http.ui.guard import guarded
from maxact.server.http.ui.patches import LARGE, THUMBNAIL, patch_key
from maxact.server.http.ui.render import here, page, url
from maxact.server.http.ui.services import UiServices
from maxact.server.http.ui.views import (
    ChannelRow,
    LayerView,
    channel_rows,
    layer_view,
    scan_view,
)
from maxact.server.jobs.store import ScanRecord, TopKRow

PAGE_SIZE = 50
SORTS = (
    ("channel", "channel"),
    ("max", "max"),
    ("mean", "mean max"),
    ("firing", "firing rate"),
    ("selectivity", "selectivity"),
)
RENDER_HELP = {
    "rf": "the unit's receptive field cropped from the original image (grey: past its edge)",
    "mask": "where the channel's map is highest around the winning unit",
    "heatmap": "the channel's map over its receptive field; the ring marks the winning unit",
}
FINISHED_CACHE_S = 86400  # a finished scan's patch never changes


@dataclass(frozen=True)
class LayerQuery:
    sort: str
    desc: bool
    hide_dead: bool
    hide_flat: bool
    q: str
    page: int
    render: str


def _sorted_rows(
    rows: list[ChannelRow], query: LayerQuery, rlabels: dict[int, str]
) -> list[ChannelRow]:
    """The rows kept by the query's filters (the text also matches `rlabels`, the channels'
    response labels), in its order."""
    kept = [
        r
        for r in rows
        if not (query.hide_dead and r.dead)
        and not (query.hide_flat and r.flat)
        and (not query.q or r.matches(query.q, rlabels.get(r.channel, "")))
    ]
    if query.sort == "channel":
        return sorted(kept, key=lambda r: r.channel, reverse=query.desc)

    def key(r: ChannelRow) -> tuple[float, int]:
        value = getattr(r, query.sort)
        value = -math.inf if value is None else float(value)
        return (-value if query.desc else value, r.channel)

    return sorted(kept, key=key)


class ScanPages:
    def __init__(self, ui: UiServices) -> None:
        self.ui = ui

    def layer_parts(self, record: ScanRecord, layer: str) -> tuple[LayerView, LayerStatistics]:
        """The scanned layer's catalogue row and statistics (LAYER_NOT_FOUND if not scanned)."""
        stats = layer_statistics(self.ui.jobs, record, layer)
        _, _, entries = self.ui.jobs.prepare(record)
        entry = next(e for e in entries if e.name == layer)
        return layer_view(entry), stats

    def labels(self, model: str, layer: str) -> list[str]:
        """The class names of a named flat output's channels ([] for other layers)."""
        named, names = self.ui.analysis.class_names(model)
        return names if named == layer else []

    def pending(self, record: ScanRecord, what: str, here: str) -> Response:
        return page("pending.html", scan=scan_view(record), what=what, here=here)

    def scan(self, scan_id: str) -> Response:
        record = self.ui.scans.get(scan_id)
        _, _, entries = self.ui.jobs.prepare(record)
        dead: dict[str, int] = {}
        labelled = False
        if record.state is ScanState.SUCCEEDED:
            for name in record.layers:
                stats = layer_statistics(self.ui.jobs, record, name)
                dead[name] = sum(stats.dead)
                labelled = labelled or stats.labelled
        return page(
            "scan.html",
            scan=scan_view(record),
            layers=[layer_view(e) for e in entries],
            dead=dead,
            labelled=labelled,
        )

    def layer(self, scan_id: str, layer: str, query: LayerQuery, here: str) -> Response:
        """A finished scan's layer; a running one's from its last checkpoint (figures of the
        images so far, no thumbnails yet), which the page refreshes as the scan goes on."""
        record = self.ui.scans.get(scan_id)
        if query.render not in RENDER_MODES:
            raise invalid_argument("INVALID_RENDER", f"render must be one of {RENDER_MODES}")
        if record.state is ScanState.SUCCEEDED:
            view, stats = self.layer_parts(record, layer)
            partial = False
        else:
            so_far = {} if record.finished else self.ui.jobs.checkpoint_statistics(record)
            if layer not in so_far:
                return self.pending(record, layer, here)
            view = self.scanned_layer(record, layer)
            stats, partial = so_far[layer], True
        return self.layer_answer(record, view, stats, query, partial, here)

    def layer_answer(
        self,
        record: ScanRecord,
        view: LayerView,
        stats: LayerStatistics,
        query: LayerQuery,
        partial: bool,
        here: str,
    ) -> Response:
        layer, jobs = view.name, self.ui.jobs
        rows = channel_rows(stats, self.labels(record.model, layer))
        every = [] if partial or not query.q else [r.channel for r in rows]
        shown = _sorted_rows(rows, query, self.ui.labels.shown(jobs, record.id, layer, every))
        pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
        number = min(max(1, query.page), pages)
        on_page = shown[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        channels = [] if partial else [r.channel for r in on_page]
        hits = stored_rankings(jobs, record, layer, channels)
        thumbs = {
            channel: thumbnails(record.id, layer, channel, rows, query.render, THUMBNAIL)
            for channel, rows in hits.items()
        }
        rlabels = self.ui.labels.shown(jobs, record.id, layer, channels)
        hists = parts.histogram_bars(jobs, record.id, layer, channels)
        params = {
            "layer": layer,
            "sort": query.sort,
            "desc": 1 if query.desc else "",
            "hide_dead": 1 if query.hide_dead else "",
            "hide_flat": 1 if query.hide_flat else "",
            "q": query.q,
            "render": query.render if query.render != "rf" else "",
        }

        def page_url(n: int) -> str:
            return url(f"/scans/{record.id}/layers", **params, page=n)

        return page(
            "layer.html",
            scan=scan_view(record),
            layer=view,
            images=stats.images,
            labelled=stats.labelled,
            rows=on_page,
            thumbs=thumbs,
            rlabels=rlabels,
            hists=hists,
            shown=len(shown),
            channels=len(rows),
            dead=sum(r.dead for r in rows),
            flat=sum(r.flat for r in rows),
            pages=pages,
            view=LayerQuery(**{**query.__dict__, "page": number}),
            sorts=SORTS,
            renders=RENDER_MODES,
            tile=THUMBNAIL,
            page_url=page_url,
            partial=partial,
            here=here,
        )

    def neuron(self, scan_id: str, layer: str, channel: int, render: str, here: str) -> Response:
        """A finished scan's neuron (its responses sections load apart: they read the
        per-image matrix); a running one's ranking so far, refreshed as the scan goes on."""
        record = self.ui.scans.get(scan_id)
        if render not in RENDER_MODES:
            raise invalid_argument("INVALID_RENDER", f"render must be one of {RENDER_MODES}")
        if record.state is ScanState.SUCCEEDED:
            view, stats = self.layer_parts(record, layer)
            _check_channel(layer, channel, stats.channels)
            ranked = [
                stored_rankings(self.ui.jobs, record, layer, [channel], bottom)[channel]
                for bottom in (False, True)
            ]
        else:
            so_far = None if record.finished else self.ui.jobs.checkpoint(record)
            if so_far is None or layer not in so_far.statistics:
                return self.pending(record, layer, here)
            stats = so_far.statistics[layer]
            _check_channel(layer, channel, stats.channels)
            view = self.scanned_layer(record, layer)
            ranked = [
                so_far.rankings(layer, channel, TopKKind.of(record.mode, bottom))
                for bottom in (False, True)
            ]
        partial = record.state is not ScanState.SUCCEEDED
        top, bottom = ranked

        def neuron_url(c: int) -> str:
            return url(
                f"/scans/{record.id}/neurons",
                layer=layer,
                channel=c,
                render=render if render != "rf" else "",
            )

        return page(
            "neuron.html",
            scan=scan_view(record),
            layer=view,
            row=channel_rows(stats, self.labels(record.model, layer))[channel],
            images=stats.images,
            channels=stats.channels,
            prev=channel - 1 if channel > 0 else None,
            next=channel + 1 if channel + 1 < stats.channels else None,
            neuron_url=neuron_url,
            render=render,
            renders=RENDER_MODES,
            render_help=RENDER_HELP.get(render, ""),
            responses_url=url(
                f"/scans/{record.id}/neurons/responses", layer=layer, channel=channel
            ),
            rankings=[
                (f"Top {len(top)}: the strongest responses", [_hit(h) for h in top], False),
                (f"Bottom {len(bottom)}: the weakest responses", [_hit(h) for h in bottom], True),
            ],
            tile=LARGE,
            partial=partial,
            here=here,
        )

    def scanned_layer(self, record: ScanRecord, layer: str) -> LayerView:
        _, _, entries = self.ui.jobs.prepare(record)
        return layer_view(next(e for e in entries if e.name == layer))


def _check_channel(layer: str, channel: int, channels: int) -> None:
    if not 0 <= channel < channels:
        raise invalid_argument(
            "CHANNEL_OUT_OF_RANGE",
            f"channel {channel} is out of range for layer {layer[:200]!r}, which has "
            f"{channels} channels (valid: 0..{channels - 1})",
        )


@dataclass(frozen=True)
class Thumbnail:
    rank: int
    image: str
    score: float
    src: str  # the patch image's URL
    href: str  # the neuron page's URL


def thumbnails(
    scan: str, layer: str, channel: int, rows: list[TopKRow], render: str, size: int
) -> list[Thumbnail]:
    """A row's thumbnails with their URLs built once per row (a page shows 450 of them)."""
    src = url(f"/ui/patches/{scan}.png", layer=layer, channel=channel, render=render, size=size)
    href = url(f"/scans/{scan}/neurons", layer=layer, channel=channel)
    return [Thumbnail(r.rank, r.image, r.score, f"{src}&rank={r.rank}", href) for r in rows]


def _hit(row: Any) -> dict[str, Any]:
    return {"rank": row.rank, "image": row.image, "score": row.score, "label": ""}


def scan_routes(router: APIRouter, ui: UiServices) -> None:
    pages = ScanPages(ui)
    guard = guarded(ui.token)

    @router.get("/scans/{scan_id}", include_in_schema=False)
    @guard
    async def scan_page(request: Request, scan_id: str) -> Response:
        return await asyncio.to_thread(pages.scan, scan_id)

    @router.get("/scans/{scan_id}/layers", include_in_schema=False)
    @guard
    async def layer_page(
        request: Request,
        scan_id: str,
        layer: str = "",
        sort: str = "channel",
        desc: bool = False,
        hide_dead: bool = False,
        hide_flat: bool = False,
        q: str = "",
        page: int = 1,
        render: str = "rf",
    ) -> Response:
        if sort not in dict(SORTS):
            raise invalid_argument("INVALID_SORT", f"sort must be one of {list(dict(SORTS))}")
        query = LayerQuery(sort, desc, hide_dead, hide_flat, q[:200], page, render)
        return await asyncio.to_thread(pages.layer, scan_id, layer, query, here(request))

    @router.get("/scans/{scan_id}/neurons", include_in_schema=False)
    @guard
    async def neuron_page(
        request: Request, scan_id: str, layer: str = "", channel: int = 0, render: str = "rf"
    ) -> Response:
        where = here(request)
        return await asyncio.to_thread(pages.neuron, scan_id, layer, channel, render, where)

    @router.get("/ui/patches/{scan_id}.png", include_in_schema=False)
    @guard
    async def patch_image(
        request: Request,
        scan_id: str,
        layer: str,
        channel: int,
        rank: int,
        render: str = "rf",
        bottom: bool = False,
        size: int = THUMBNAIL,
    ) -> Response:
        key = patch_key(scan_id, layer, channel, bottom, render, size)
        pngs = ui.patches.cached(key)  # a hit needs no worker thread
        if pngs is None:
            pngs = await asyncio.to_thread(ui.patches.pngs, key)
        if not 1 <= rank <= len(pngs):
            raise invalid_argument("RANK_OUT_OF_RANGE", f"rank must be in 1..{len(pngs)}")
        return Response(
            pngs[rank - 1],
            media_type="image/png",
            headers={"Cache-Control": f"private, max-age={FINISHED_CACHE_S}"},
        )
