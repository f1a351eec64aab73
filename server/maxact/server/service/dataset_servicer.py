"""DatasetService: the image folders under the data root, as conversions around
`core.datasets`."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from maxact.server.core.datasets import Datasets
from maxact.server.core.validate import ServerState
from maxact.server.service import messages
from maxact.server.service.errors import rpc
from maxact.server.service.pagination import page_of
from maxact.v1 import dataset_service_pb2 as pb
from maxact.v1 import dataset_service_pb2_grpc


class DatasetServicer(dataset_service_pb2_grpc.DatasetServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.datasets = Datasets(state.datasets)

    @rpc
    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListDatasetsResponse:
        names = await asyncio.to_thread(self.datasets.names)
        page = page_of("datasets", names, str, request.page_size, request.page_token, str)
        # only this page's folders are walked (sizes and counts cost a directory listing each)
        summaries = await asyncio.to_thread(lambda: [self.datasets.summary(n) for n in page.items])
        return pb.ListDatasetsResponse(
            datasets=[messages.dataset_summary(s) for s in summaries],
            next_page_token=page.next_page_token,
        )

    @rpc
    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetDatasetResponse:
        summary = await asyncio.to_thread(self.datasets.summary, request.name)
        return pb.GetDatasetResponse(dataset=messages.dataset_summary(summary))
