"""Questions answered from a scan's per-image responses: `maxact histogram`, `labels` and
`similar --json`."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query

from maxact.common.resources import scan_id as bare_scan_id
from maxact.server.core.responses import (
    DEFAULT_BINS,
    DEFAULT_SIMILAR,
    MAX_BINS,
    MAX_SIMILAR,
    response_histogram,
    response_labels,
    response_similar,
)
from maxact.server.http.api.neurons import Layer
from maxact.server.http.api.scans import ScanId
from maxact.server.http.context import HttpContext

Channel = Annotated[int, Query(ge=0, le=2**31 - 1, description="the channel")]


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def add_routes(api: APIRouter, context: HttpContext) -> None:
    jobs = context.jobs

    @api.get("/scans/{scan_id}/histogram", tags=["responses"])
    async def get_histogram(
        scan_id: ScanId,
        layer: Layer,
        channel: Channel,
        bins: Annotated[int, Query(ge=1, le=MAX_BINS)] = DEFAULT_BINS,
    ) -> dict[str, Any]:
        """How many images respond how strongly (`maxact histogram --json`)."""
        found = await asyncio.to_thread(response_histogram, jobs, scan_id, layer, channel, bins)
        return {
            "scan": bare_scan_id(scan_id),
            "layer": layer,
            "channel": channel,
            "edges": found.edges,
            "counts": found.counts,
        }

    @api.get("/scans/{scan_id}/labels", tags=["responses"])
    async def get_labels(scan_id: ScanId, layer: Layer) -> dict[str, Any]:
        """Per channel, the class it separates best (`maxact labels --json`)."""
        labels = await asyncio.to_thread(response_labels, jobs, scan_id, layer)
        return {
            "scan": bare_scan_id(scan_id),
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

    @api.get("/scans/{scan_id}/similar", tags=["responses"])
    async def get_similar(
        scan_id: ScanId,
        layer: Layer,
        channel: Channel,
        top: Annotated[int, Query(ge=1, le=MAX_SIMILAR)] = DEFAULT_SIMILAR,
    ) -> dict[str, Any]:
        """The channels whose responses correlate most with one's (`maxact similar --json`)."""
        similar = await asyncio.to_thread(response_similar, jobs, scan_id, layer, channel, top)
        return {
            "channel": channel,
            "similar": [{"channel": c, "correlation": r} for c, r in similar],
        }
