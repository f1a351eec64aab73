"""A finished scan's neurons: `maxact neuron ID LAYER C --json` with a `patch_url` per result,
the patch images themselves (immutable: a finished scan's patch never changes) and a layer's
stored statistics."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from maxact.common import convert, documents
from maxact.common.defaults import DEFAULT_MASK_QUANTILE, capped_k
from maxact.common.kinds import RenderMode
from maxact.server.core.analysis import Analysis
from maxact.server.core.neurons import finished_scan, stored_neuron, stored_statistics
from maxact.server.core.responses import response_quantile, shown_label
from maxact.server.errors import not_found, shown
from maxact.server.http.api.scans import ScanId, summary
from maxact.server.http.context import HttpContext
from maxact.server.jobs.scan_jobs import ScanJobs, scan_id_from
from maxact.server.ops.memory import BudgetedCache
from maxact.server.patches.render import RenderOptions
from maxact.server.service import messages
from maxact.server.service.convert import statistics_to_proto

IMMUTABLE = "private, max-age=31536000, immutable"
Layer = Annotated[str, Query(max_length=4096, description="tensor name, exactly as in the graph")]
Channel = Annotated[int, Query(ge=0, le=2**31 - 1)]
Render = Literal["rf", "heatmap", "mask"]
Quantile = Annotated[float | None, Query(gt=0, lt=1, description="--render mask's quantile")]
PatchSize = Annotated[int, Query(ge=0, le=4096, description="letterbox into N x N (0: own size)")]
SERVED_PATCHES_BYTES = 32 * 1024 * 1024
# the PNGs a neuron document rendered, kept for the patch URLs it hands out (a client asks
# for them right after): their requests then read no ranking and crop nothing again
_SERVED: BudgetedCache[bytes] = BudgetedCache("http_patches", SERVED_PATCHES_BYTES)


def _served_key(
    scan_id: str, layer: str, channel: int, bottom: bool, options: RenderOptions, rank: int
) -> tuple[object, ...]:
    return (
        scan_id,
        layer,
        channel,
        bottom,
        options.mode,
        options.mask_quantile,
        options.patch_size,
        rank,
    )


def render_options(render: str, mask_quantile: float | None, patch_size: int) -> RenderOptions:
    quantile = DEFAULT_MASK_QUANTILE if mask_quantile is None else mask_quantile
    return RenderOptions(RenderMode(render), quantile, patch_size).validated()


def patch_url(
    scan_id: str,
    rank: int,
    layer: str,
    channel: int,
    bottom: bool,
    render: str,
    mask_quantile: float | None,
    patch_size: int,
) -> str:
    """Where the image of one ranked hit is served (only what differs from the defaults)."""
    query: dict[str, Any] = {"layer": layer, "channel": channel}
    if bottom:
        query["bottom"] = "true"
    if render != RenderMode.RF:
        query["render"] = render
    if mask_quantile is not None:
        query["mask_quantile"] = mask_quantile
    if patch_size:
        query["patch_size"] = patch_size
    return f"/api/v1/scans/{scan_id}/patches/{rank}?{urlencode(query)}"


def neuron_document(
    jobs: ScanJobs,
    scan: str,
    layer: str,
    channel: int,
    k: int | None,
    bottom: bool,
    options: RenderOptions,
) -> dict[str, Any]:
    """The `maxact neuron --json` document (k by default as the CLI picks it; the label of a
    named logits channel), blocking."""
    if k is None:
        k = capped_k(jobs.get(scan_id_from(scan)).k)
    answer = stored_neuron(jobs, scan, layer, channel, k, bottom, options)
    for hit, patch in zip(answer.hits, answer.patches, strict=False):
        key = _served_key(answer.record.id, layer, channel, bottom, options, hit.rank)
        _SERVED.put(key, patch.png, len(patch.png))
    response = messages.neuron_response(answer)
    result = documents.neuron_result(
        summary(answer.record),
        layer,
        channel,
        k,
        bottom,
        [convert.patch(p) for p in response.patches],
        response.images_scanned,
    )
    doc = documents.topk_json(result, None, options.mode)
    names_layer, names = Analysis(jobs).class_names(answer.record.model)
    if names_layer == layer and 0 <= channel < len(names):
        doc["label"] = names[channel]
    else:
        found = shown_label(jobs, scan, layer, channel)
        if found is not None:  # the label the scan's per-image responses give it
            doc["label"], doc["label_auc"] = found.label, found.auc
    return doc


def quantile_document(
    jobs: ScanJobs, scan: str, layer: str, channel: int, quantile: float, k: int
) -> dict[str, Any]:
    """`maxact neuron --quantile Q --json` (k 0: the scan's k), blocking."""
    found = response_quantile(jobs, scan, layer, channel, quantile, k)
    model = summary(found.record).model
    return documents.quantile_json(
        model, layer, channel, quantile, found.value, found.examples, found.images_scanned
    )


def add_routes(api: APIRouter, context: HttpContext) -> None:
    jobs = context.jobs

    @api.get("/scans/{scan_id}/neurons", tags=["neurons"])
    async def get_neuron(
        scan_id: ScanId,
        layer: Layer,
        channel: Channel,
        k: Annotated[int | None, Query(ge=1, le=10_000)] = None,
        bottom: bool = False,
        render: Render = "rf",
        mask_quantile: Quantile = None,
        patch_size: PatchSize = 0,
        quantile: Annotated[
            float | None,
            Query(ge=0, le=1, description="the images nearest this quantile of the responses"),
        ] = None,
    ) -> dict[str, Any]:
        """One channel's top-k (or bottom-k) from a finished scan (`maxact neuron --json`),
        each result with the `patch_url` of its image; with `quantile` the k images nearest
        that quantile of the channel's per-image responses (`maxact neuron --quantile Q`)."""
        if quantile is not None:
            return await asyncio.to_thread(
                quantile_document, jobs, scan_id, layer, channel, quantile, k or 0
            )
        options = render_options(render, mask_quantile, patch_size)
        doc = await asyncio.to_thread(
            neuron_document, jobs, scan_id, layer, channel, k, bottom, options
        )
        scan = scan_id_from(scan_id)
        for result in doc["results"]:
            result["patch_url"] = patch_url(
                scan, result["rank"], layer, channel, bottom, render, mask_quantile, patch_size
            )
        return doc

    _add_patches_and_statistics(api, jobs)


def _add_patches_and_statistics(api: APIRouter, jobs: ScanJobs) -> None:
    @api.get(
        "/scans/{scan_id}/patches/{rank}",
        tags=["neurons"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def get_patch(
        scan_id: ScanId,
        rank: Annotated[int, Path(ge=1, le=10_000)],
        layer: Layer,
        channel: Channel,
        bottom: bool = False,
        render: Render = "rf",
        mask_quantile: Quantile = None,
        patch_size: PatchSize = 0,
    ) -> Response:
        """The PNG patch of one ranked hit of a finished scan (cacheable: it never changes)."""
        options = render_options(render, mask_quantile, patch_size)
        key = _served_key(scan_id_from(scan_id), layer, channel, bottom, options, rank)
        served = _SERVED.get(key)
        if served is not None:
            await asyncio.to_thread(finished_scan, jobs, scan_id)  # not deleted since
            return Response(served, media_type="image/png", headers={"Cache-Control": IMMUTABLE})
        answer = await asyncio.to_thread(
            stored_neuron, jobs, scan_id, layer, channel, 0, bottom, options, rank
        )
        if not answer.patches:
            raise not_found(
                "PATCH_NOT_FOUND", f"channel {channel} of {shown(layer)} has no hit of rank {rank}"
            )
        return Response(
            answer.patches[0].png, media_type="image/png", headers={"Cache-Control": IMMUTABLE}
        )

    @api.get("/scans/{scan_id}/statistics", tags=["neurons"])
    async def get_statistics(scan_id: ScanId, layer: Layer) -> dict[str, Any]:
        """A layer's stored per-channel statistics: max, mean, firing rate, dead, selectivity,
        class means."""
        stats = await asyncio.to_thread(stored_statistics, jobs, scan_id, layer)
        return documents.statistics_json(convert.layer_statistics(statistics_to_proto(stats)))
