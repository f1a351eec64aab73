"""AnalysisService: the class answer, one class's channels with patches, scan comparison and
a model's class names, as conversions around `core.analysis`."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from maxact.server.core.analysis import Analysis
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.service import messages
from maxact.server.service.convert import render_options_from_proto
from maxact.server.service.errors import rpc
from maxact.v1 import analysis_service_pb2 as apb
from maxact.v1 import analysis_service_pb2_grpc


class AnalysisServicer(analysis_service_pb2_grpc.AnalysisServiceServicer):
    def __init__(self, jobs: ScanJobs) -> None:
        self.analysis = Analysis(jobs)

    @rpc
    async def GetClassAnswer(
        self, request: apb.GetClassAnswerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apb.GetClassAnswerResponse:
        threshold = request.selective_threshold if request.HasField("selective_threshold") else None
        report = await asyncio.to_thread(
            self.analysis.class_answer, request.scan, request.layer, threshold, request.top
        )
        return messages.class_answer_response(report)

    @rpc
    async def GetClassChannels(
        self, request: apb.GetClassChannelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apb.GetClassChannelsResponse:
        report = await asyncio.to_thread(
            self.analysis.class_channels,
            request.scan,
            request.layer,
            request.class_name,
            request.top,
            request.k,
            render_options_from_proto(request),  # render, mask_quantile, patch_size
        )
        return messages.class_channels_response(report)

    @rpc
    async def CompareScans(
        self, request: apb.CompareScansRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apb.CompareScansResponse:
        comparison = await asyncio.to_thread(
            self.analysis.compare, request.scan_a, request.scan_b, request.layer
        )
        return messages.compare_response(comparison)

    @rpc
    async def GetClassNames(
        self, request: apb.GetClassNamesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apb.GetClassNamesResponse:
        layer, names = await asyncio.to_thread(self.analysis.class_names, request.model)
        return apb.GetClassNamesResponse(layer=layer, names=names)
