"""ScanService: persisted scans (create, get, list, watch, cancel, delete)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from maxact.common.defaults import DEFAULT_K
from maxact.common.kinds import TopKMode
from maxact.server.errors import invalid_argument
from maxact.server.jobs.scan_jobs import ScanJobs, scan_id_from
from maxact.server.jobs.store import ScanRecord
from maxact.server.service.convert import preprocessing_from_proto, scan_to_proto
from maxact.server.service.errors import rpc
from maxact.server.service.pagination import decode_token, encode_token, page_size
from maxact.server.service.streaming import poll_changes
from maxact.v1 import scan_service_pb2 as spb
from maxact.v1 import scan_service_pb2_grpc

WATCH_INTERVAL = 0.2


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline on the time.monotonic() clock (None: the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _progress(record: ScanRecord) -> tuple[str, int, int]:
    return (record.state.value, record.images_done, record.images_failed)


class ScanServicer(scan_service_pb2_grpc.ScanServiceServicer):
    def __init__(self, jobs: ScanJobs) -> None:
        self.jobs = jobs

    @rpc
    async def CreateScan(
        self, request: spb.CreateScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.CreateScanResponse:
        try:
            mode = TopKMode.from_proto(request.mode)
        except ValueError:
            raise invalid_argument("INVALID_MODE", f"unknown top-k mode {request.mode}") from None
        preprocessing = preprocessing_from_proto(request.preprocessing)
        record = await asyncio.to_thread(
            self.jobs.create,
            request.model,
            list(request.layers),
            request.dataset,
            request.k or DEFAULT_K,
            mode,
            preprocessing,
            request_id=request.request_id,
            deadline=_deadline(context),
        )
        model = await asyncio.to_thread(self.jobs.models.get, record.model)
        return spb.CreateScanResponse(
            scan=scan_to_proto(record),
            preprocessing_warning=model.preprocessing_warning(preprocessing),
        )

    @rpc
    async def GetScan(
        self, request: spb.GetScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.GetScanResponse:
        record = await asyncio.to_thread(self.jobs.get, scan_id_from(request.name))
        return spb.GetScanResponse(scan=scan_to_proto(record))

    @rpc
    async def ListScans(
        self, request: spb.ListScansRequest, context: grpc.aio.ServicerContext
    ) -> spb.ListScansResponse:
        size = page_size(request.page_size)
        before_seq = decode_token("scans", request.page_token, int)
        records = await asyncio.to_thread(self.jobs.store.list_scans, size + 1, before_seq or 0)
        page, more = records[:size], len(records) > size
        return spb.ListScansResponse(
            scans=[scan_to_proto(self.jobs.with_unrecorded(r)) for r in page],
            next_page_token=encode_token("scans", page[-1].seq) if more and page else "",
        )

    @rpc
    async def WatchScan(
        self, request: spb.WatchScanRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.WatchScanResponse]:
        scan_id = scan_id_from(request.name)
        changes = poll_changes(
            lambda: self.jobs.get(scan_id),
            key=_progress,
            finished=lambda record: record.finished,
            interval=WATCH_INTERVAL,
        )
        async for record in changes:
            yield spb.WatchScanResponse(scan=scan_to_proto(record))

    @rpc
    async def CancelScan(
        self, request: spb.CancelScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.CancelScanResponse:
        record = await asyncio.to_thread(self.jobs.cancel, scan_id_from(request.name))
        return spb.CancelScanResponse(scan=scan_to_proto(record))

    @rpc
    async def DeleteScan(
        self, request: spb.DeleteScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.DeleteScanResponse:
        await asyncio.to_thread(self.jobs.delete, scan_id_from(request.name))
        return spb.DeleteScanResponse()
