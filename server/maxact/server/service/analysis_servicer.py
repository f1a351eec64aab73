"""AnalysisService: the class answer, one class's channels with patches, scan comparison and
a model's class names, as conversions around `core.analysis`."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from maxact.common.class_answer import ClassChannel
from maxact.server.core.analysis import Analysis
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.service.convert import (
    neuron_patches_to_proto,
    render_options_from_proto,
    scan_to_proto,
)
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
        answer = report.answer
        response = apb.GetClassAnswerResponse(
            scan=scan_to_proto(report.scan),
            layer=report.layer,
            images_scanned=report.images_scanned,
            channels=answer.channels,
            dead=answer.dead,
            non_selective=answer.non_selective,
            uncovered=answer.uncovered,
        )
        for entry in answer.classes:
            response.classes.append(
                apb.ClassAnswer(
                    name=entry.name,
                    images=entry.images,
                    selective_channels=entry.selective_channels,
                    top_channels=[_channel(c) for c in entry.top_channels],
                    selective_details=[_channel(c) for c in entry.selective],
                )
            )
        for pair in answer.confusable:
            response.confusable.append(
                apb.ConfusablePair(classes=pair.classes, similarity=pair.similarity)
            )
        return response

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
        response = apb.GetClassChannelsResponse(
            class_name=report.found.name,
            images=report.found.images,
            scan=scan_to_proto(report.scan),
        )
        for entry in report.channels:
            response.channels.append(
                apb.ClassChannelPatches(
                    channel=_channel(entry.channel), patches=neuron_patches_to_proto(entry.neuron)
                )
            )
        return response

    @rpc
    async def CompareScans(
        self, request: apb.CompareScansRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apb.CompareScansResponse:
        comparison = await asyncio.to_thread(
            self.analysis.compare, request.scan_a, request.scan_b, request.layer
        )
        response = apb.CompareScansResponse(
            layer=comparison.layer,
            k=comparison.k,
            scan_a=scan_to_proto(comparison.scan_a),
            scan_b=scan_to_proto(comparison.scan_b),
        )
        for change in comparison.channels:
            response.channels.append(
                apb.ChannelChange(
                    channel=change.channel,
                    overlap=change.overlap,
                    firing_rate_a=change.firing_rate[0],
                    firing_rate_b=change.firing_rate[1],
                    mean_a=change.mean[0],
                    mean_b=change.mean[1],
                )
            )
        return response

    @rpc
    async def GetClassNames(
        self, request: apb.GetClassNamesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apb.GetClassNamesResponse:
        layer, names = await asyncio.to_thread(self.analysis.class_names, request.model)
        return apb.GetClassNamesResponse(layer=layer, names=names)


def _channel(channel: ClassChannel) -> apb.ClassChannel:
    return apb.ClassChannel(
        channel=channel.channel,
        mean=channel.mean,
        contrast=channel.contrast,
        selectivity=channel.selectivity,
    )
