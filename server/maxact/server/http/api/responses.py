"""Questions answered from a scan's per-image responses: `maxact histogram`, `labels` and
`similar --json`, and the matrix itself (`maxact responses --out --ids`)."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Iterator
from typing import Annotated, Any

import numpy.lib.format as npy
from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from maxact.common import documents
from maxact.common.resources import scan_id as bare_scan_id
from maxact.server.core.responses import (
    DEFAULT_BINS,
    DEFAULT_SIMILAR,
    MAX_BINS,
    MAX_SIMILAR,
    ResponsesBlock,
    response_blocks,
    response_histogram,
    response_ids,
    response_labels,
    response_similar,
)
from maxact.server.http.api.neurons import Layer
from maxact.server.http.api.scans import ScanId
from maxact.server.http.context import HttpContext

Channel = Annotated[int, Query(ge=0, le=2**31 - 1, description="the channel")]


def npy_stream(first: ResponsesBlock, rest: Iterator[ResponsesBlock]) -> Iterator[bytes]:
    """The .npy file of the blocks (float32, row-major), as `maxact responses --out` writes
    it: the header, then each block's rows as they are read."""
    header = io.BytesIO()
    shape = (first.images, first.channels)
    npy.write_array_header_2_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    yield header.getvalue()
    for block in itertools.chain([first], rest):
        yield block.values


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
        return documents.histogram_json(
            bare_scan_id(scan_id), layer, channel, found.edges, found.counts
        )

    @api.get("/scans/{scan_id}/labels", tags=["responses"])
    async def get_labels(scan_id: ScanId, layer: Layer) -> dict[str, Any]:
        """Per channel, the class it separates best (`maxact labels --json`)."""
        labels = await asyncio.to_thread(response_labels, jobs, scan_id, layer)
        return documents.labels_json(bare_scan_id(scan_id), layer, labels)

    @api.get("/scans/{scan_id}/similar", tags=["responses"])
    async def get_similar(
        scan_id: ScanId,
        layer: Layer,
        channel: Channel,
        top: Annotated[int, Query(ge=1, le=MAX_SIMILAR)] = DEFAULT_SIMILAR,
    ) -> dict[str, Any]:
        """The channels whose responses correlate most with one's (`maxact similar --json`)."""
        similar = await asyncio.to_thread(response_similar, jobs, scan_id, layer, channel, top)
        return documents.similar_json(channel, similar)

    _add_export(api, context)


def _add_export(api: APIRouter, context: HttpContext) -> None:
    jobs = context.jobs

    @api.get(
        "/scans/{scan_id}/responses",
        tags=["responses"],
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    async def get_matrix(scan_id: ScanId, layer: Layer) -> StreamingResponse:
        """The layer's matrix R[image, channel] as a .npy file (float32, row-major, images in
        dataset order: `maxact responses --out`), streamed block by block."""
        blocks = await asyncio.to_thread(response_blocks, jobs, scan_id, layer)
        first = await asyncio.to_thread(next, blocks)  # errors before the stream starts
        name = f"{bare_scan_id(scan_id)}-responses.npy"
        return StreamingResponse(
            npy_stream(first, blocks),  # a plain iterator: read in the thread pool
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @api.get(
        "/scans/{scan_id}/responses/ids",
        tags=["responses"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def get_matrix_ids(scan_id: ScanId, layer: Layer) -> PlainTextResponse:
        """The image ids of the matrix's rows, one a line (`maxact responses --ids`)."""
        ids = await asyncio.to_thread(response_ids, jobs, scan_id, layer)
        return PlainTextResponse("".join(f"{image}\n" for image in ids))
