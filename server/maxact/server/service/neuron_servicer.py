"""NeuronService: queries against a finished scan, as conversions around `core.neurons`."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from maxact.server.core.neurons import stored_neuron, stored_statistics
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.service import messages
from maxact.server.service.convert import render_options_from_proto, statistics_to_proto
from maxact.server.service.errors import rpc
from maxact.v1 import neuron_service_pb2 as npb
from maxact.v1 import neuron_service_pb2_grpc


class NeuronServicer(neuron_service_pb2_grpc.NeuronServiceServicer):
    def __init__(self, jobs: ScanJobs) -> None:
        self.jobs = jobs

    @rpc
    async def GetNeuron(
        self, request: npb.GetNeuronRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> npb.GetNeuronResponse:
        render = render_options_from_proto(request)
        answer = await asyncio.to_thread(
            stored_neuron,
            self.jobs,
            request.scan,
            request.layer,
            request.channel,
            request.k,
            request.bottom,
            render if request.include_patches else None,
        )
        return messages.neuron_response(answer)

    @rpc
    async def GetLayerStatistics(
        self, request: npb.GetLayerStatisticsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> npb.GetLayerStatisticsResponse:
        stats = await asyncio.to_thread(stored_statistics, self.jobs, request.scan, request.layer)
        return statistics_to_proto(stats)
