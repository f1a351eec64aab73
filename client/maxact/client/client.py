"""Client: the typed Python API over the maxact gRPC services."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from maxact.client import types as t
from maxact.client.analysis import AnalysisCalls
from maxact.client.channel import MAX_MESSAGE_BYTES, open_channel, resolve_token
from maxact.client.errors import rpc_errors
from maxact.client.images import ImageData, ImageRequests, as_images
from maxact.client.pages import all_pages
from maxact.client.responses import ResponseCalls
from maxact.client.scans import ScanCalls
from maxact.client.stream import TopKStream
from maxact.client.upload import DEFAULT_CHUNK_BYTES, file_sha256, upload_requests
from maxact.common import convert
from maxact.common.defaults import DEFAULT_K
from maxact.common.kinds import TopKMode
from maxact.common.preprocessing import Preprocessing
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
__all__ = ["DEFAULT_SERVER", "MAX_MESSAGE_BYTES", "Client", "default_server"]

R = TypeVar("R")


def default_server() -> str:
    """MAXACT_SERVER when set, else the default loopback port."""
    return os.environ.get("MAXACT_SERVER") or DEFAULT_SERVER


class Client:
    """A connection to a maxact server; use it as a context manager to close the channel.

    `token`: bearer token sent with every call (default: $MAXACT_TOKEN, if set).
    `tls_ca`: CA certificate (PEM path or bytes) to verify a TLS server; None: plaintext.
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        timeout: float | None = None,
        token: str | None = None,
        tls_ca: str | Path | bytes | None = None,
    ) -> None:
        self.server = server or default_server()
        self.timeout = timeout
        self._channel = open_channel(self.server, token=resolve_token(token), tls_ca=tls_ca)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._fields = receptive_field_service_pb2_grpc.ReceptiveFieldServiceStub(self._channel)
        self._datasets = dataset_service_pb2_grpc.DatasetServiceStub(self._channel)
        self._topk = topk_service_pb2_grpc.TopKServiceStub(self._channel)
        # persisted scans and neuron queries: client.scans.create(...), .get, .watch, .neuron
        self.scans = ScanCalls(self._channel, self._call, timeout, self.server)
        # class questions and scan comparisons: client.analysis.classes(...), .compare(...)
        self.analysis = AnalysisCalls(self._channel, self._call)
        # a finished scan's per-image responses: client.responses.histogram(...), .labels,
        # .similar, .quantile, .export
        self.responses = ResponseCalls(self._channel, self._call, self.server)

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
        """Start a call with the client's deadline; RpcError becomes MaxactError (a streaming
        call's later errors are converted by its reader: TopKStream, ScanCalls.watch)."""
        with rpc_errors(self.server):
            return method(request, timeout=self.timeout)

    def list_models_page(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[t.ModelSummary], str]:
        """One page of models sorted by name, and the token of the next page ("" at the end)."""
        request = model_service_pb2.ListModelsRequest(page_size=page_size, page_token=page_token)
        response = self._call(self._models.ListModels, request)
        return [convert.model_summary(m) for m in response.models], response.next_page_token

    def list_models(self, page_size: int = 0) -> list[t.ModelSummary]:
        """Every model under the model root, sorted by name (follows page tokens)."""
        return list(all_pages(lambda token: self.list_models_page(page_size, token)))

    def load_model(self, name: str) -> t.ModelSummary:
        """Load (and validate) a model now rather than on first use."""
        response = self._call(self._models.LoadModel, model_service_pb2.LoadModelRequest(name=name))
        return convert.model_summary(response.model)

    def unload_model(self, name: str) -> None:
        """Drop the server's cached copy (sessions, fields); the file stays."""
        self._call(self._models.UnloadModel, model_service_pb2.UnloadModelRequest(name=name))

    def upload_model(
        self,
        path: str | Path,
        name: str | None = None,
        *,
        overwrite: bool = False,
        preprocess_json: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_BYTES,
        preprocessing: Preprocessing | None = None,
    ) -> t.ModelSummary:
        """Stream a local .onnx file to the server's model root as `name` (default: file stem).

        The server verifies the SHA-256 and that the file is an ONNX model before it appears;
        `preprocessing` (or `preprocess_json`, the sidecar's JSON object, docs/contracts.md
        "Preprocessing", parsed here: a typo raises ValueError before anything is sent) becomes
        its default preprocessing. An existing name is refused (ALREADY_EXISTS) unless
        `overwrite`.
        """
        path = Path(path)
        if preprocess_json is not None:
            if preprocessing is not None:
                raise ValueError("give preprocessing or preprocess_json, not both")
            document = json.loads(preprocess_json)
            if not isinstance(document, dict):
                raise ValueError("preprocess_json must be a JSON object")
            preprocessing = Preprocessing.from_dict(document)
        requests = upload_requests(
            path,
            name or path.stem,
            sha256=file_sha256(path),
            overwrite=overwrite,
            preprocessing=preprocessing,
            chunk_size=chunk_size,
        )
        response = self._call(self._models.UploadModel, requests)
        return convert.model_summary(response.model)

    def delete_scan(self, scan: str) -> None:
        """Remove a persisted scan with its results; a running scan is cancelled first."""
        self.scans.delete(scan)

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

    def list_datasets_page(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[t.DatasetSummary], str]:
        """One page of datasets sorted by name, and the next page's token ("" at the end)."""
        request = dataset_service_pb2.ListDatasetsRequest(
            page_size=page_size, page_token=page_token
        )
        response = self._call(self._datasets.ListDatasets, request)
        return [convert.dataset_summary(d) for d in response.datasets], response.next_page_token

    def list_datasets(self, page_size: int = 0) -> list[t.DatasetSummary]:
        """Every dataset under the data root, sorted by name (follows page tokens)."""
        return list(all_pages(lambda token: self.list_datasets_page(page_size, token)))

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
        k: int = DEFAULT_K,
        mode: str = "image",
        bottom: bool = False,
        unit: tuple[int, int] | None = None,
        per_image_cap: int = 0,
        preprocessing: Preprocessing | None = None,
        render: str = "rf",
        mask_quantile: float | None = None,
        patch_size: int = 0,
    ) -> TopKStream:
        """Start a top-k scan of a server-side dataset; returns the event stream.

        Patches: `render` "rf" (the receptive field, pixels outside the image neutral grey),
        "heatmap" (rf with the activation map overlaid) or "mask" (NetDissect style: the box
        of the activation above the image's `mask_quantile`, default 0.95, around the unit);
        `patch_size` > 0 letterboxes every patch into that square (montages)."""
        query = _topk_query(
            model, layer, channel, k, mode, bottom, unit, per_image_cap, preprocessing
        )
        convert.set_render(query, render, mask_quantile, patch_size)
        request = topk_service_pb2.StreamTopKRequest(query=query, dataset=dataset)
        return self._stream(self._call(self._topk.StreamTopK, request), query, mode)

    def topk_images(
        self,
        model: str,
        layer: str,
        channel: int,
        images: Iterable[tuple[str, ImageData]] | Iterable[str | os.PathLike[str]] | str | Path,
        *,
        k: int = DEFAULT_K,
        mode: str = "image",
        bottom: bool = False,
        unit: tuple[int, int] | None = None,
        per_image_cap: int = 0,
        preprocessing: Preprocessing | None = None,
        render: str = "rf",
        mask_quantile: float | None = None,
        patch_size: int = 0,
        keep_as_dataset: str | None = None,
    ) -> TopKStream:
        """Start a top-k scan of images streamed from here; returns the same event stream as
        `topk`. Nothing is stored on the server unless `keep_as_dataset` names a new dataset
        to keep the images as (created only when the stream completes).

        `images`: (id, bytes or local path) pairs in the order to rank them (ties: the earlier
        wins), or local folders and files, whose ids and order follow docs/contracts.md (see
        `collect_images`). Files are read one at a time as gRPC sends them; an unreadable one
        cancels the scan and is raised (OSError) from the stream.
        """
        query = _topk_query(
            model, layer, channel, k, mode, bottom, unit, per_image_cap, preprocessing
        )
        convert.set_render(query, render, mask_quantile, patch_size)
        requests = ImageRequests(query, as_images(images), keep_as_dataset or "")
        call = self._call(self._topk.StreamTopKImages, iter(requests))
        requests.attach(call.cancel)
        return self._stream(call, query, mode, local_error=lambda: requests.error)

    def _stream(
        self,
        call: Any,
        query: topk_service_pb2.TopKQuery,
        mode: str,
        local_error: Callable[[], BaseException | None] = lambda: None,
    ) -> TopKStream:
        """The typed event stream of a started top-k call (`topk` and `topk_images`)."""
        return TopKStream(
            call,
            model=query.model,
            layer=query.layer,
            channel=query.channel,
            k=query.k,
            mode=mode,
            bottom=query.bottom,
            server=self.server,
            local_error=local_error,
        )


def _topk_query(
    model: str,
    layer: str,
    channel: int,
    k: int,
    mode: str,
    bottom: bool,
    unit: tuple[int, int] | None,
    per_image_cap: int,
    preprocessing: Preprocessing | None,
) -> topk_service_pb2.TopKQuery:
    if mode not in {m.value for m in TopKMode}:
        raise ValueError(f"mode must be 'image' or 'position', not {mode!r}")
    if k <= 0:
        raise ValueError(f"k must be positive, not {k}")
    query = topk_service_pb2.TopKQuery(
        model=model,
        layer=layer,
        channel=channel,
        k=k,
        mode=TopKMode(mode).to_proto(),
        bottom=bottom,
        per_image_cap=per_image_cap,
    )
    if unit is not None:
        query.unit.CopyFrom(common_pb2.Unit(y=unit[0], x=unit[1]))
    if preprocessing is not None:
        query.preprocessing.CopyFrom(preprocessing.to_proto())
    return query
