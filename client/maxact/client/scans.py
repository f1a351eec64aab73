"""Persisted scans and neuron queries: typed results over ScanService and NeuronService."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from maxact.client import types as t
from maxact.client.errors import MaxactError, from_status, rpc_errors
from maxact.client.pages import all_pages
from maxact.common import convert
from maxact.common.defaults import DEFAULT_K
from maxact.common.kinds import ResponsesMode, TopKMode
from maxact.common.preprocessing import Preprocessing
from maxact.common.resources import scan_name
from maxact.common.results import (  # re-exported: the client's typed results
    ChannelStatistics as ChannelStatistics,
)
from maxact.common.results import (
    LayerStatistics as LayerStatistics,
)
from maxact.common.results import ScanSummary
from maxact.v1 import (
    neuron_service_pb2,
    neuron_service_pb2_grpc,
    scan_service_pb2,
    scan_service_pb2_grpc,
)


@dataclass(frozen=True)
class ScanInfo(ScanSummary):
    """A persisted scan; `failure` has the code and reason of a failed scan's error."""

    failure: MaxactError | None = None


def scan_info(message: scan_service_pb2.Scan, preprocessing_warning: str = "") -> ScanInfo:
    summary = convert.scan_summary(message, preprocessing_warning)
    failure = from_status(message.error) if message.HasField("error") else None
    fields = {f.name: getattr(summary, f.name) for f in dataclasses.fields(summary)}
    return ScanInfo(**fields, failure=failure)


class ScanCalls:
    """The scan and neuron RPCs; `call` turns gRPC errors into MaxactError."""

    def __init__(
        self,
        channel: grpc.Channel,
        call: Callable[[Callable[..., Any], Any], Any],
        timeout: float | None,
        server: str = "",
    ) -> None:
        self._scans = scan_service_pb2_grpc.ScanServiceStub(channel)
        self._neurons = neuron_service_pb2_grpc.NeuronServiceStub(channel)
        self._call = call
        self._timeout = timeout
        self._server = server

    def create(
        self,
        model: str,
        layers: list[str],
        dataset: str,
        k: int = DEFAULT_K,
        mode: str = "image",
        preprocessing: Preprocessing | None = None,
        request_id: str | None = None,
        responses: str = "auto",
    ) -> ScanInfo:
        """Start a scan. `request_id` (default: a new UUID4) makes the call idempotent: the
        channel's retries, or yours with the same id, return the scan the first call made.
        `responses` on|off|auto: keep each image's response per channel (auto: while it fits
        the server's bound) for client.responses."""
        request = scan_service_pb2.CreateScanRequest(
            model=model,
            layers=layers,
            dataset=dataset,
            k=k,
            mode=TopKMode(mode).to_proto(),
            request_id=request_id if request_id is not None else uuid.uuid4().hex,
            responses=ResponsesMode(responses).to_proto(),
        )
        if preprocessing is not None:
            request.preprocessing.CopyFrom(preprocessing.to_proto())
        response = self._call(self._scans.CreateScan, request)
        return scan_info(response.scan, response.preprocessing_warning)

    def get(self, scan: str) -> ScanInfo:
        request = scan_service_pb2.GetScanRequest(name=scan_name(scan))
        return scan_info(self._call(self._scans.GetScan, request).scan)

    def cancel(self, scan: str) -> ScanInfo:
        request = scan_service_pb2.CancelScanRequest(name=scan_name(scan))
        return scan_info(self._call(self._scans.CancelScan, request).scan)

    def delete(self, scan: str) -> None:
        """Remove the scan and its results (a running scan is cancelled first)."""
        self._call(self._scans.DeleteScan, scan_service_pb2.DeleteScanRequest(name=scan_name(scan)))

    def list_page(self, page_size: int = 0, page_token: str = "") -> tuple[list[ScanInfo], str]:
        """One page of scans, newest first, and the next page's token ("" at the end)."""
        request = scan_service_pb2.ListScansRequest(page_size=page_size, page_token=page_token)
        response = self._call(self._scans.ListScans, request)
        return [scan_info(s) for s in response.scans], response.next_page_token

    def list(self, page_size: int = 100) -> list[ScanInfo]:
        """Every scan, newest first (follows page tokens)."""
        return list(all_pages(lambda token: self.list_page(page_size, token)))

    def watch(self, scan: str) -> Iterator[ScanInfo]:
        """Yields the scan whenever its state or progress changes, until it is finished."""
        request = scan_service_pb2.WatchScanRequest(name=scan_name(scan))
        with rpc_errors(self._server):
            for response in self._scans.WatchScan(request, timeout=self._timeout):
                yield scan_info(response.scan)

    def neuron(
        self,
        scan: str,
        layer: str,
        channel: int,
        k: int = 0,
        bottom: bool = False,
        patches: bool = True,
        render: str = "rf",
        mask_quantile: float | None = None,
        patch_size: int = 0,
    ) -> tuple[ScanInfo, tuple[t.Patch, ...], int]:
        """(the scan, ranked patches (png empty unless `patches`), images scanned).

        `render`: "rf" (the receptive field, grey outside the image), "heatmap" (with the
        activation map overlaid) or "mask" (NetDissect-style box of the activation above the
        image's `mask_quantile`, default 0.95); `patch_size` > 0 letterboxes every patch to
        that square."""
        request = neuron_service_pb2.GetNeuronRequest(
            scan=scan_name(scan),
            layer=layer,
            channel=channel,
            k=k,
            bottom=bottom,
            include_patches=patches,
        )
        convert.set_render(request, render, mask_quantile, patch_size)
        response = self._call(self._neurons.GetNeuron, request)
        found = tuple(convert.patch(p) for p in response.patches)
        return scan_info(response.scan), found, response.images_scanned

    def statistics(self, scan: str, layer: str) -> LayerStatistics:
        request = neuron_service_pb2.GetLayerStatisticsRequest(scan=scan_name(scan), layer=layer)
        return convert.layer_statistics(self._call(self._neurons.GetLayerStatistics, request))
