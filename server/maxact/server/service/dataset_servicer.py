"""DatasetService: the image folders under the data root."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from maxact.server.data.datasets import Dataset
from maxact.server.service.errors import rpc
from maxact.server.service.pagination import page_of
from maxact.server.service.validate import ServerState
from maxact.v1 import dataset_service_pb2 as pb
from maxact.v1 import dataset_service_pb2_grpc


def _summary(dataset: Dataset) -> pb.DatasetSummary:
    return pb.DatasetSummary(
        name=dataset.name,
        image_count=len(dataset.ids),
        labels=dataset.classes,
        size_bytes=dataset.size_bytes,
    )


class DatasetServicer(dataset_service_pb2_grpc.DatasetServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    @rpc
    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListDatasetsResponse:
        catalog = self.state.datasets
        names = await asyncio.to_thread(lambda: sorted(catalog.names()))
        page = page_of("datasets", names, str, request.page_size, request.page_token, str)
        # only this page's folders are walked (sizes and counts cost a directory listing each)
        datasets = await asyncio.to_thread(lambda: [_summary(catalog.open(n)) for n in page.items])
        return pb.ListDatasetsResponse(datasets=datasets, next_page_token=page.next_page_token)

    @rpc
    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetDatasetResponse:
        summary = await asyncio.to_thread(lambda: _summary(self.state.datasets.open(request.name)))
        return pb.GetDatasetResponse(dataset=summary)
