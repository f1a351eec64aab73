"""Client: the typed Python API over the maxact gRPC services."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import grpc

from maxact.client import convert
from maxact.client import types as t
from maxact.client.errors import from_rpc_error
from maxact.client.preprocessing import Preprocessing
from maxact.client.stream import TopKStream
from maxact.v1 import (
    common_pb2,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    receptive_field_service_pb2,
    receptive_field_service_pb2_grpc,
    topk_service_pb2,
    topk_service_pb2_grpc,
)

DEFAULT_SERVER = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # patches of large photos exceed gRPC's 4 MiB default

R = TypeVar("R")


def default_server() -> str:
    """MAXACT_SERVER when set, else the default loopback port (DESIGN §3)."""
    return os.environ.get("MAXACT_SERVER") or DEFAULT_SERVER


class Client:
    """A connection to a maxact server; use it as a context manager to close the channel."""

    def __init__(self, server: str | None = None, *, timeout: float | None = None) -> None:
        self.server = server or default_server()
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            self.server,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._fields = receptive_field_service_pb2_grpc.ReceptiveFieldServiceStub(self._channel)
        self._datasets = dataset_service_pb2_grpc.DatasetServiceStub(self._channel)
        self._topk = topk_service_pb2_grpc.TopKServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: Callable[..., R], request: Any) -> R:
        """One unary call with the client's deadline; RpcError becomes MaxactError."""
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.server) from None

    def list_models(self) -> list[t.ModelSummary]:
        response = self._call(self._models.ListModels, model_service_pb2.ListModelsRequest())
        return [convert.model_summary(m) for m in response.models]

    def get_model(self, name: str, size: tuple[int, int] | None = None) -> t.ModelInfo:
        """Inputs, default preprocessing and layers; size is needed for dynamic-size models."""
        request = model_service_pb2.GetModelRequest(name=name, size=list(size or ()))
        return convert.model_info(self._call(self._models.GetModel, request))

    def receptive_field(
        self,
        model: str,
        layer: str,
        unit: tuple[int, int] | None = None,
        size: tuple[int, int] | None = None,
    ) -> t.FieldInfo:
        """The layer's field; with unit (y, x) also that unit's exact and formula boxes."""
        request = receptive_field_service_pb2.GetReceptiveFieldRequest(
            model=model, layer=layer, size=list(size or ())
        )
        if unit is not None:
            request.unit.CopyFrom(common_pb2.Unit(y=unit[0], x=unit[1]))
        return convert.field_info(self._call(self._fields.GetReceptiveField, request))

    def list_datasets(self) -> list[t.DatasetSummary]:
        request = dataset_service_pb2.ListDatasetsRequest()
        return [
            convert.dataset_summary(d)
            for d in self._call(self._datasets.ListDatasets, request).datasets
        ]

    def get_dataset(self, name: str) -> t.DatasetSummary:
        request = dataset_service_pb2.GetDatasetRequest(name=name)
        return convert.dataset_summary(self._call(self._datasets.GetDataset, request).dataset)

    def topk(
        self,
        model: str,
        layer: str,
        channel: int,
        *,
        dataset: str,
        k: int = 9,
        mode: str = "image",
        bottom: bool = False,
        unit: tuple[int, int] | None = None,
        per_image_cap: int = 0,
        preprocessing: Preprocessing | None = None,
    ) -> TopKStream:
        """Start a top-k scan of a server-side dataset; returns the event stream."""
        if mode not in convert.MODES:
            raise ValueError(f"mode must be 'image' or 'position', not {mode!r}")
        if k <= 0:
            raise ValueError(f"k must be positive, not {k}")
        query = topk_service_pb2.TopKQuery(
            model=model,
            layer=layer,
            channel=channel,
            k=k,
            mode=convert.MODES[mode],
            bottom=bottom,
            per_image_cap=per_image_cap,
        )
        if unit is not None:
            query.unit.CopyFrom(common_pb2.Unit(y=unit[0], x=unit[1]))
        if preprocessing is not None:
            query.preprocessing.CopyFrom(preprocessing.to_proto())
        request = topk_service_pb2.StreamTopKRequest(query=query, dataset=dataset)
        try:
            call = self._topk.StreamTopK(request, timeout=self.timeout)
        except grpc.RpcError as error:  # pragma: no cover - raised lazily in practice
            raise from_rpc_error(error, self.server) from None
        return TopKStream(
            call,
            model=model,
            layer=layer,
            channel=channel,
            k=k,
            mode=mode,
            bottom=bottom,
            server=self.server,
        )
