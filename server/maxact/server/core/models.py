"""The models under the model root: list, describe (inputs, default preprocessing, layer
catalogue with fields), load, unload, and upload from a stream of chunks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from onnx import TensorProto, ValueInfoProto

from maxact.common.records import ModelSummary, TensorInfo
from maxact.server.core.validate import ServerState, load_model, size_from
from maxact.server.data.preprocess import Preprocessing
from maxact.server.models.registry import LayerEntry
from maxact.server.models.upload import ModelUpload

DEFAULT_MAX_UPLOAD_BYTES = 2048 * 1024 * 1024


@dataclass(frozen=True)
class ModelDescription:
    name: str
    default_preprocessing: Preprocessing
    input_size: tuple[int, int]
    inputs: list[TensorInfo]  # the image input only
    outputs: list[TensorInfo]
    layers: list[LayerEntry]  # at `input_size`


@dataclass(frozen=True)
class UploadHeader:
    """What the first message of an upload says; `preprocessing` None writes no sidecar."""

    name: str
    sha256: str
    overwrite: bool
    preprocessing: Preprocessing | None


class Models:
    def __init__(
        self, state: ServerState, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    ) -> None:
        self.registry = state.models
        self.state = state
        self.max_upload_bytes = max_upload_bytes

    def summaries(self) -> list[ModelSummary]:
        """Every model, sorted by name (blocking: lists the model root)."""
        return [
            ModelSummary(name, size, self.registry.is_loaded(name))
            for name, size in sorted(self.registry.names())
        ]

    async def describe(self, name: str, size: list[int]) -> ModelDescription:
        """`size` [] means the model's own input size."""
        model = await load_model(self.state, name)
        input_size = model.input_size(size_from(size))
        view = await asyncio.to_thread(model.view, input_size)
        if view.unshaped and await asyncio.to_thread(model.size_multiple, input_size) is not None:
            # the model takes sides of some multiple, just not these: say so, as topk and rf do
            raise model.size_error(input_size, view, view.unshaped[0])
        graph = model.proto.graph
        return ModelDescription(
            name=model.name,
            default_preprocessing=model.default_preprocessing,
            input_size=input_size,
            inputs=[_tensor_info(v) for v in graph.input if v.name == model.input.name],
            outputs=[_tensor_info(v) for v in graph.output],
            layers=list(view.layers),
        )

    async def load(self, name: str) -> ModelSummary:
        model = await load_model(self.state, name)
        return ModelSummary(model.name, model.path.stat().st_size, loaded=True)

    def unload(self, name: str) -> None:
        self.registry.path_of(name)  # NOT_FOUND for a model that does not exist
        self.registry.unload(name)

    async def upload(self, header: UploadHeader, chunks: AsyncIterator[bytes]) -> ModelSummary:
        """Chunks go to a temp file as they arrive (memory stays at one chunk); a cancelled
        upload cancels this task, and the finally removes the temp file."""
        sidecar = ""
        if header.preprocessing is not None:
            sidecar = json.dumps(header.preprocessing.to_dict(), indent=2) + "\n"
        upload = await asyncio.to_thread(
            ModelUpload,
            self.registry.model_root,
            header.name,
            header.sha256,
            max_bytes=self.max_upload_bytes,
            overwrite=header.overwrite,
            preprocess_json=sidecar,
        )
        try:
            async for chunk in chunks:
                upload.write(chunk)
            size = await asyncio.to_thread(upload.commit)
        finally:
            upload.abort()
        self.registry.unload(header.name)  # an overwritten model is loaded afresh on next use
        return ModelSummary(header.name, size, loaded=False)


def _tensor_info(value: ValueInfoProto) -> TensorInfo:
    """An onnx ValueInfoProto as a TensorInfo."""
    tensor_type = value.type.tensor_type
    shape = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
        for d in tensor_type.shape.dim
    )
    element_type = (
        TensorProto.DataType.Name(tensor_type.elem_type).lower() if tensor_type.elem_type else ""
    )
    return TensorInfo(value.name, element_type, shape)
