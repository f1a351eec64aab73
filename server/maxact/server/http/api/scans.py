"""Persisted scans: create, list, get, delete, cancel (`maxact scan ... --json`) and their
progress as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from maxact.common import convert, documents
from maxact.common.kinds import ResponsesMode, TopKMode
from maxact.common.results import ScanSummary
from maxact.server.core.scans import NewScanRequest, Scans
from maxact.server.data.preprocess import parse_mapping
from maxact.server.http.context import HttpContext
from maxact.server.jobs.store import ScanRecord
from maxact.server.service.convert import scan_to_proto

MAX_NAME_CHARS = 4096
HEARTBEAT_SECONDS = 15.0
# the last page size scans are read in (the store's pages, not the answer's)
LIST_PAGE = 500
ScanId = Annotated[str, Path(max_length=200, description="the scan's id")]


class NewScan(BaseModel):
    """The body of POST /api/v1/scans (`maxact scan create`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=MAX_NAME_CHARS, description="model name under the model root")
    layers: list[Annotated[str, Field(max_length=MAX_NAME_CHARS)]] = Field(
        min_length=1, max_length=1000, description="tensor names, exactly as in the graph"
    )
    dataset: str = Field(max_length=MAX_NAME_CHARS, description="dataset folder name")
    k: int = Field(0, ge=0, le=10_000, description="hits kept per channel (0: the default)")
    mode: Literal["image", "position"] = "image"
    preprocessing: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the model's preprocessing (see the CLI)"
    )
    request_id: str = Field(
        "", max_length=200, description="a retry with the same id returns the same scan"
    )
    responses: Literal["auto", "on", "off"] = Field(
        "auto",
        description="keep each image's maximum response per channel (auto: while it fits "
        "the server's --max-responses-mb)",
    )


def header_text(text: str, limit: int = 500) -> str:
    """`text` as a header value: printable ASCII only (names are user data: any character)."""
    escaped = text[:limit].encode("ascii", "backslashreplace").decode("ascii")
    return "".join(ch if " " <= ch <= "~" else " " for ch in escaped)


def summary(record: ScanRecord) -> ScanSummary:
    """A stored scan as the client sees it (through the API message both faces answer)."""
    return convert.scan_summary(scan_to_proto(record))


def _event(kind: str, record: ScanRecord) -> bytes:
    data = json.dumps(documents.scan_json(summary(record)), separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def _events(scans: Scans, scan_id: str) -> AsyncIterator[bytes]:
    """`progress` per change of state or counts, then one `done` with the final state; the
    stream ends there. While nothing changes (a queued scan) a comment line every
    HEARTBEAT_SECONDS keeps proxies from closing the stream and finds a client that left. A
    client that goes away cancels this generator; the finally leaves nothing running."""
    updates = scans.watch(scan_id)
    step: asyncio.Future[ScanRecord] = asyncio.ensure_future(anext(updates))
    try:
        while True:
            done, _ = await asyncio.wait({step}, timeout=HEARTBEAT_SECONDS)
            if not done:
                yield b": keep-alive\n\n"
                continue
            try:
                record = step.result()
            except StopAsyncIteration:
                return
            yield _event("done" if record.finished else "progress", record)
            if record.finished:
                return
            step = asyncio.ensure_future(anext(updates))
    finally:
        step.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await step
        await updates.aclose()


def add_routes(api: APIRouter, context: HttpContext) -> None:
    scans = Scans(context.jobs)

    @api.post("/scans", tags=["scans"])
    async def create_scan(body: NewScan, response: Response) -> dict[str, Any]:
        """Start a scan (`maxact scan create --json`); it runs in the background."""
        request = NewScanRequest(
            model=body.model,
            layers=list(body.layers),
            dataset=body.dataset,
            k=body.k,
            mode=TopKMode(body.mode),
            preprocessing=parse_mapping(body.preprocessing, "preprocessing"),
            request_id=body.request_id,
            responses=ResponsesMode(body.responses),
        )
        created = await asyncio.to_thread(scans.create, request)
        if created.preprocessing_warning:
            response.headers["X-Maxact-Warning"] = header_text(created.preprocessing_warning)
        return documents.scan_json(summary(created.record))

    @api.get("/scans", tags=["scans"])
    async def list_scans() -> dict[str, Any]:
        """Every scan, newest first (`maxact scan list --json`)."""

        def every() -> list[ScanRecord]:
            records, before = [], 0
            while True:
                page = scans.page(LIST_PAGE, before)
                records.extend(page.records)
                if page.next_before is None:
                    return records
                before = page.next_before

        return documents.scans_json([summary(r) for r in await asyncio.to_thread(every)])

    @api.get("/scans/{scan_id}", tags=["scans"])
    async def get_scan(scan_id: ScanId) -> dict[str, Any]:
        """One scan's state and progress (`maxact scan get ID --json`)."""
        return documents.scan_json(summary(await asyncio.to_thread(scans.get, scan_id)))

    _add_changes(api, scans)


def _add_changes(api: APIRouter, scans: Scans) -> None:
    """Delete, cancel and the event stream."""

    @api.delete("/scans/{scan_id}", tags=["scans"])
    async def delete_scan(scan_id: ScanId) -> dict[str, Any]:
        """Delete a scan and its results (`maxact scan delete ID --json`)."""
        record = await asyncio.to_thread(scans.get, scan_id)
        await asyncio.to_thread(scans.delete, scan_id)
        return documents.deleted_json(record.id)

    @api.post("/scans/{scan_id}:cancel", tags=["scans"])
    async def cancel_scan(scan_id: ScanId) -> dict[str, Any]:
        """Stop a queued or running scan (`maxact scan cancel ID --json`)."""
        return documents.scan_json(summary(await asyncio.to_thread(scans.cancel, scan_id)))

    @api.get(
        "/scans/{scan_id}/events",
        tags=["scans"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def scan_events(scan_id: ScanId) -> StreamingResponse:
        """Server-Sent Events: `progress` (the `scan get` document) at every step, then
        `done` with the final state; then the stream ends."""
        await asyncio.to_thread(scans.get, scan_id)  # a JSON 404 before any stream starts
        return StreamingResponse(
            _events(scans, scan_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
