"""ModelService: list, describe (inputs, default preprocessing, layer catalogue with fields),
load, unload, and upload by client streaming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
from onnx import TensorProto

from maxact.server.errors import invalid_argument
from maxact.server.models.upload import ModelUpload
from maxact.server.service.convert import (
    field_to_proto,
    preprocessing_from_proto,
    preprocessing_to_proto,
)
from maxact.server.service.errors import rpc
from maxact.server.service.pagination import page_of
from maxact.server.service.validate import ServerState, load_model, size_from
from maxact.v1 import model_service_pb2 as pb
from maxact.v1 import model_service_pb2_grpc

DEFAULT_MAX_UPLOAD_BYTES = 2048 * 1024 * 1024


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self, state: ServerState, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    ) -> None:
        self.state = state
        self.max_upload_bytes = max_upload_bytes

    @rpc
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        names = await asyncio.to_thread(lambda: sorted(self.state.models.names()))
        page = page_of(
            "models", names, lambda item: item[0], request.page_size, request.page_token, str
        )
        return pb.ListModelsResponse(
            models=[
                pb.ModelSummary(
                    name=name, size_bytes=size, loaded=self.state.models.is_loaded(name)
                )
                for name, size in page.items
            ],
            next_page_token=page.next_page_token,
        )

    @rpc
    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelResponse:
        model = await load_model(self.state, request.name)
        size = model.input_size(size_from(list(request.size)))
        view = await asyncio.to_thread(model.view, size)
        if view.unshaped and await asyncio.to_thread(model.size_multiple, size) is not None:
            # the model takes sides of some multiple, just not these: say so, as topk and rf do
            raise model.size_error(size, view, view.unshaped[0])
        response = pb.GetModelResponse(
            name=model.name,
            default_preprocessing=preprocessing_to_proto(model.default_preprocessing),
            input_height=size[0],
            input_width=size[1],
        )
        for value in model.proto.graph.input:
            if value.name == model.input.name:
                response.inputs.append(_tensor_info(value))
        response.outputs.extend(_tensor_info(value) for value in model.proto.graph.output)
        for layer in view.layers:
            message = pb.Layer(
                name=layer.name, op=layer.op, shape=list(layer.shape), field_error=layer.field_error
            )
            if layer.field is not None:
                message.receptive_field.CopyFrom(field_to_proto(layer.field))
            response.layers.append(message)
        return response

    @rpc
    async def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoadModelResponse:
        model = await load_model(self.state, request.name)
        return pb.LoadModelResponse(
            model=pb.ModelSummary(
                name=model.name, size_bytes=model.path.stat().st_size, loaded=True
            )
        )

    @rpc
    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadModelResponse:
        self.state.models.path_of(request.name)
        self.state.models.unload(request.name)
        return pb.UnloadModelResponse()

    @rpc
    async def UploadModel(
        self,
        request_iterator: AsyncIterator[pb.UploadModelRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadModelResponse:
        """Chunks go to a temp file as they arrive (memory stays at one chunk); a cancelled
        stream cancels this task, and the finally removes the temp file."""
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
        sidecar = ""
        if header.HasField("preprocessing"):
            prep = preprocessing_from_proto(header.preprocessing)
            sidecar = json.dumps(prep.to_dict(), indent=2) + "\n"
        models = self.state.models
        upload = await asyncio.to_thread(
            ModelUpload,
            models.model_root,
            header.name,
            header.sha256,
            max_bytes=self.max_upload_bytes,
            overwrite=header.overwrite,
            preprocess_json=sidecar,
        )
        try:
            async for message in iterator:
                if message.WhichOneof("message") != "chunk":
                    raise invalid_argument(
                        "UPLOAD_HEADER_REPEATED", "only the first upload message is a header"
                    )
                upload.write(message.chunk)
            size = await asyncio.to_thread(upload.commit)
        finally:
            upload.abort()
        models.unload(header.name)  # an overwritten model is loaded afresh on next use
        return pb.UploadModelResponse(
            model=pb.ModelSummary(name=header.name, size_bytes=size, loaded=False)
        )


def _tensor_info(value: object) -> pb.TensorInfo:
    tensor_type = value.type.tensor_type  # type: ignore[attr-defined]
    shape = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
        for d in tensor_type.shape.dim
    ]
    return pb.TensorInfo(
        name=value.name,  # type: ignore[attr-defined]
        element_type=TensorProto.DataType.Name(tensor_type.elem_type).lower()
        if tensor_type.elem_type
        else "",
        shape=shape,
    )
