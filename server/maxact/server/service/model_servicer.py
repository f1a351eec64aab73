"""ModelService: list, describe, load, unload, and upload by client streaming, as
conversions around `core.models`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from maxact.server.core.models import Models, UploadHeader
from maxact.server.core.validate import ServerState
from maxact.server.errors import invalid_argument
from maxact.server.service import messages
from maxact.server.service.convert import preprocessing_from_proto
from maxact.server.service.errors import rpc
from maxact.server.service.pagination import page_of
from maxact.v1 import model_service_pb2 as pb
from maxact.v1 import model_service_pb2_grpc


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, state: ServerState, max_upload_bytes: int) -> None:
        self.models = Models(state, max_upload_bytes)

    @rpc
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListModelsResponse:
        summaries = await asyncio.to_thread(self.models.summaries)
        page = page_of(
            "models", summaries, lambda s: s.name, request.page_size, request.page_token, str
        )
        return pb.ListModelsResponse(
            models=[messages.model_summary(s) for s in page.items],
            next_page_token=page.next_page_token,
        )

    @rpc
    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetModelResponse:
        model = await self.models.describe(request.name, list(request.size))
        return messages.model_response(model)

    @rpc
    async def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LoadModelResponse:
        return pb.LoadModelResponse(
            model=messages.model_summary(await self.models.load(request.name))
        )

    @rpc
    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UnloadModelResponse:
        self.models.unload(request.name)
        return pb.UnloadModelResponse()

    @rpc
    async def UploadModel(
        self,
        request_iterator: AsyncIterator[pb.UploadModelRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.UploadModelResponse:
        iterator = aiter(request_iterator)
        first = await anext(iterator, None)
        if first is None:
            raise invalid_argument("UPLOAD_EMPTY", "the upload stream carried no message")
        if first.WhichOneof("message") != "header":
            raise invalid_argument(
                "UPLOAD_HEADER_REQUIRED", "the first upload message must be the header"
            )
        header = first.header
        if not header.name:
            raise invalid_argument("MODEL_REQUIRED", "the upload header must name the model")
        prep = (
            preprocessing_from_proto(header.preprocessing)
            if header.HasField("preprocessing")
            else None
        )
        upload = UploadHeader(header.name, header.sha256, header.overwrite, prep)
        summary = await self.models.upload(upload, _chunks(iterator))
        return pb.UploadModelResponse(model=messages.model_summary(summary))


async def _chunks(requests: AsyncIterator[pb.UploadModelRequest]) -> AsyncIterator[bytes]:
    """The messages after the header, each of which must be a chunk."""
    async for message in requests:
        if message.WhichOneof("message") != "chunk":
            raise invalid_argument(
                "UPLOAD_HEADER_REPEATED", "only the first upload message is a header"
            )
        yield message.chunk
