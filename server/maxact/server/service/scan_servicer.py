"""ScanService and NeuronService: persisted scans arrive with the store (issue #5).

Until then every RPC answers UNIMPLEMENTED naming itself, never a fake answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from maxact.v1 import neuron_service_pb2 as npb
from maxact.v1 import neuron_service_pb2_grpc, scan_service_pb2_grpc
from maxact.v1 import scan_service_pb2 as spb

from .errors import abort_unimplemented


class ScanServicer(scan_service_pb2_grpc.ScanServiceServicer):
    async def CreateScan(
        self, request: spb.CreateScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.CreateScanResponse:
        await abort_unimplemented(context, "ScanService.CreateScan")
        return spb.CreateScanResponse()

    async def GetScan(
        self, request: spb.GetScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.GetScanResponse:
        await abort_unimplemented(context, "ScanService.GetScan")
        return spb.GetScanResponse()

    async def ListScans(
        self, request: spb.ListScansRequest, context: grpc.aio.ServicerContext
    ) -> spb.ListScansResponse:
        await abort_unimplemented(context, "ScanService.ListScans")
        return spb.ListScansResponse()

    async def WatchScan(
        self, request: spb.WatchScanRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.WatchScanResponse]:
        await abort_unimplemented(context, "ScanService.WatchScan")
        yield spb.WatchScanResponse()

    async def CancelScan(
        self, request: spb.CancelScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.CancelScanResponse:
        await abort_unimplemented(context, "ScanService.CancelScan")
        return spb.CancelScanResponse()


class NeuronServicer(neuron_service_pb2_grpc.NeuronServiceServicer):
    async def GetNeuron(
        self, request: npb.GetNeuronRequest, context: grpc.aio.ServicerContext
    ) -> npb.GetNeuronResponse:
        await abort_unimplemented(context, "NeuronService.GetNeuron")
        return npb.GetNeuronResponse()

    async def GetLayerStatistics(
        self, request: npb.GetLayerStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> npb.GetLayerStatisticsResponse:
        await abort_unimplemented(context, "NeuronService.GetLayerStatistics")
        return npb.GetLayerStatisticsResponse()
