"""ResponseService: questions answered from a scan's per-image responses, as conversions
around `core.responses`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from maxact.server.core.responses import (
    response_blocks,
    response_histogram,
    response_labels,
    response_quantile,
    response_similar,
)
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.service.errors import rpc
from maxact.v1 import response_service_pb2 as rpb
from maxact.v1 import response_service_pb2_grpc


class ResponseServicer(response_service_pb2_grpc.ResponseServiceServicer):
    def __init__(self, jobs: ScanJobs) -> None:
        self.jobs = jobs

    @rpc
    async def GetResponseHistogram(
        self, request: rpb.GetResponseHistogramRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpb.GetResponseHistogramResponse:
        found = await asyncio.to_thread(
            response_histogram,
            self.jobs,
            request.scan,
            request.layer,
            request.channel,
            request.bins,
        )
        return rpb.GetResponseHistogramResponse(edges=found.edges, counts=found.counts)

    @rpc
    async def GetQuantileExamples(
        self, request: rpb.GetQuantileExamplesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpb.GetQuantileExamplesResponse:
        answer = await asyncio.to_thread(
            response_quantile,
            self.jobs,
            request.scan,
            request.layer,
            request.channel,
            request.quantile,
            request.k,
        )
        return rpb.GetQuantileExamplesResponse(
            value=answer.value,
            examples=[
                rpb.QuantileExample(rank=rank, image=image, score=score)
                for rank, image, score in answer.examples
            ],
            images_scanned=answer.images_scanned,
        )

    @rpc
    async def GetResponseLabels(
        self, request: rpb.GetResponseLabelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpb.GetResponseLabelsResponse:
        labels = await asyncio.to_thread(
            response_labels, self.jobs, request.scan, request.layer, list(request.channels)
        )
        return rpb.GetResponseLabelsResponse(
            channels=[
                rpb.ChannelLabel(
                    channel=found.channel,
                    label=found.label,
                    auc=found.auc,
                    p_value=found.p_value,
                    purity=found.purity,
                )
                for found in labels
            ]
        )

    @rpc
    async def GetSimilarChannels(
        self, request: rpb.GetSimilarChannelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rpb.GetSimilarChannelsResponse:
        similar = await asyncio.to_thread(
            response_similar,
            self.jobs,
            request.scan,
            request.layer,
            request.channel,
            request.top,
        )
        return rpb.GetSimilarChannelsResponse(
            similar=[
                rpb.SimilarChannel(channel=channel, correlation=correlation)
                for channel, correlation in similar
            ]
        )

    @rpc
    async def ExportResponses(
        self, request: rpb.ExportResponsesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[rpb.ExportResponsesResponse]:
        blocks = await asyncio.to_thread(response_blocks, self.jobs, request.scan, request.layer)
        while (block := await asyncio.to_thread(next, blocks, None)) is not None:
            yield rpb.ExportResponsesResponse(
                images=block.images,
                channels=block.channels,
                first=block.first,
                image_ids=block.image_ids,
                values=block.values,
            )
