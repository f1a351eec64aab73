"""ScanService: persisted scans (create, get, list, watch, cancel, delete), as conversions
around `core.scans`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from maxact.common.kinds import ResponsesMode, TopKMode
from maxact.server.core.scans import NewScanRequest, Scans
from maxact.server.errors import invalid_argument
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.service.convert import preprocessing_from_proto, scan_to_proto
from maxact.server.service.errors import rpc
from maxact.server.service.pagination import decode_token, encode_token, page_size
from maxact.v1 import scan_service_pb2 as spb
from maxact.v1 import scan_service_pb2_grpc


def _deadline(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """The call's deadline on the time.monotonic() clock (None: the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class ScanServicer(scan_service_pb2_grpc.ScanServiceServicer):
    def __init__(self, jobs: ScanJobs) -> None:
        self.scans = Scans(jobs)

    @rpc
    async def CreateScan(
        self, request: spb.CreateScanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> spb.CreateScanResponse:
        try:
            mode = TopKMode.from_proto(request.mode)
        except ValueError:
            raise invalid_argument("INVALID_MODE", f"unknown top-k mode {request.mode}") from None
        try:
            responses = ResponsesMode.from_proto(request.responses)
        except ValueError:
            raise invalid_argument(
                "INVALID_RESPONSES_MODE", f"unknown responses mode {request.responses}"
            ) from None
        new = NewScanRequest(
            model=request.model,
            layers=list(request.layers),
            dataset=request.dataset,
            k=request.k,
            mode=mode,
            preprocessing=preprocessing_from_proto(request.preprocessing),
            request_id=request.request_id,
            deadline=_deadline(context),
            responses=responses,
        )
        created = await asyncio.to_thread(self.scans.create, new)
        return spb.CreateScanResponse(
            scan=scan_to_proto(created.record),
            preprocessing_warning=created.preprocessing_warning,
        )

    @rpc
    async def GetScan(
        self, request: spb.GetScanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> spb.GetScanResponse:
        record = await asyncio.to_thread(self.scans.get, request.name)
        return spb.GetScanResponse(scan=scan_to_proto(record))

    @rpc
    async def ListScans(
        self, request: spb.ListScansRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> spb.ListScansResponse:
        size = page_size(request.page_size)
        before_seq = decode_token("scans", request.page_token, int)
        page = await asyncio.to_thread(self.scans.page, size, before_seq or 0)
        return spb.ListScansResponse(
            scans=[scan_to_proto(record) for record in page.records],
            next_page_token=""
            if page.next_before is None
            else encode_token("scans", page.next_before),
        )

    @rpc
    async def WatchScan(
        self, request: spb.WatchScanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[spb.WatchScanResponse]:
        async for record in self.scans.watch(request.name):
            yield spb.WatchScanResponse(scan=scan_to_proto(record))

    @rpc
    async def CancelScan(
        self, request: spb.CancelScanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> spb.CancelScanResponse:
        record = await asyncio.to_thread(self.scans.cancel, request.name)
        return spb.CancelScanResponse(scan=scan_to_proto(record))

    @rpc
    async def DeleteScan(
        self, request: spb.DeleteScanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> spb.DeleteScanResponse:
        await asyncio.to_thread(self.scans.delete, request.name)
        return spb.DeleteScanResponse()
