"""The class questions and scan comparison: `maxact classes`, `class` and `compare --json`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from maxact.common import convert, documents
from maxact.common.defaults import DEFAULT_SELECTIVE, DEFAULT_TOP_CHANNELS, capped_k
from maxact.common.render_choice import layer_render
from maxact.common.results import ScanSummary
from maxact.server.core.analysis import Analysis
from maxact.server.core.models import Models
from maxact.server.errors import ServiceError
from maxact.server.http.api.neurons import Layer, PatchSize, Quantile, Render, render_options
from maxact.server.http.api.scans import ScanId, summary
from maxact.server.http.context import HttpContext
from maxact.server.jobs.scan_jobs import scan_id_from
from maxact.server.service import messages

Top = Annotated[int, Query(ge=1, le=10_000, description="top channels per class")]


async def _layer_render(models: Models, scan: ScanSummary, layer: str) -> str:
    """The render `class` gives a layer by default (as the report does), judged at the size
    the scan ran at; rf when the model is gone or changed."""
    try:
        description = await models.describe(scan.model, list(scan.input_size or ()))
    except ServiceError:
        return "rf"
    info = convert.model_info(messages.model_response(description))
    entry = next((entry for entry in info.layers if entry.name == layer), None)
    return layer_render(entry, scan.input_size)


def add_routes(api: APIRouter, context: HttpContext) -> None:
    analysis = Analysis(context.jobs)
    models = Models(context.state, context.settings.max_upload_bytes)

    @api.get("/scans/{scan_id}/classes", tags=["classes"])
    async def get_classes(
        scan_id: ScanId,
        layer: Layer,
        selective: Annotated[float, Query(ge=0, le=1)] = DEFAULT_SELECTIVE,
        top: Top = DEFAULT_TOP_CHANNELS,
    ) -> dict[str, Any]:
        """Dead and non-selective channels, each class's selective and top channels, the
        uncovered classes, the confusable pairs (`maxact classes --json`)."""
        report = await asyncio.to_thread(analysis.class_answer, scan_id, layer, selective, top)
        return documents.classes_json(convert.class_answer(messages.class_answer_response(report)))

    @api.get("/scans/{scan_id}/classes/{class_name}", tags=["classes"])
    async def get_class(
        scan_id: ScanId,
        class_name: Annotated[str, Path(max_length=4096)],
        layer: Layer,
        top: Top = DEFAULT_TOP_CHANNELS,
        k: Annotated[int | None, Query(ge=1, le=10_000)] = None,
        render: Render | None = None,
        mask_quantile: Quantile = None,
        patch_size: PatchSize = 0,
    ) -> dict[str, Any]:
        """The channels that fire most for one class, each with its top-k patches
        (`maxact class --json`; k and render by default as the CLI picks them)."""
        chosen: str | None = render
        if k is None or chosen is None:
            scan = summary(await asyncio.to_thread(context.jobs.get, scan_id_from(scan_id)))
            k = capped_k(scan.k) if k is None else k
            chosen = chosen or await _layer_render(models, scan, layer)
        options = render_options(chosen, mask_quantile, patch_size)
        report = await asyncio.to_thread(
            analysis.class_channels, scan_id, layer, class_name, top, k, options
        )
        result = convert.class_channels(messages.class_channels_response(report), layer)
        return documents.class_json(result, None, chosen)

    @api.get("/compare", tags=["classes"])
    async def compare(
        a: Annotated[str, Query(max_length=200)],
        b: Annotated[str, Query(max_length=200)],
        layer: Layer,
    ) -> dict[str, Any]:
        """Per channel the overlap of two scans' top-k images, firing rates and means, most
        changed first (`maxact compare A B LAYER --json`)."""
        comparison = await asyncio.to_thread(analysis.compare, a, b, layer)
        return documents.compare_json(convert.comparison(messages.compare_response(comparison)))
