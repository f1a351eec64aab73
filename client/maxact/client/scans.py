"""Persisted scans and neuron queries: typed results over ScanService and NeuronService."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from maxact.client import convert
from maxact.client import types as t
from maxact.client.errors import MaxactError, from_status, rpc_errors
from maxact.client.pages import all_pages
from maxact.common.defaults import DEFAULT_K
from maxact.common.kinds import ResponsesMode, ScanState, TopKMode
from maxact.common.preprocessing import Preprocessing
from maxact.common.resources import scan_id, scan_name
from maxact.v1 import (
    neuron_service_pb2,
    neuron_service_pb2_grpc,
    scan_service_pb2,
    scan_service_pb2_grpc,
)


@dataclass(frozen=True)
class ScanInfo:
    """A persisted scan; `id` is what the CLI prints, `name` is "scans/{id}"."""

    id: str
    state: ScanState
    images_done: int
    images_total: int
    images_failed: int
    model: str
    layers: tuple[str, ...]
    dataset: str
    k: int
    mode: TopKMode
    # the failure's message ("" unless failed); `failure` has its code and reason
    error: str = ""
    failure: MaxactError | None = None
    create_time: datetime | None = None
    update_time: datetime | None = None
    request_id: str = ""
    preprocessing: Preprocessing | None = None  # resolved when the scan was created
    # from create only: the model runs on built-in default preprocessing
    preprocessing_warning: str = ""

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) of the model input the scan ran at: its fixed size, or under a
        per-image `resize_shorter` that of a square image (the shorter side every image
        has), which is what a receptive field is judged against."""
        prep = self.preprocessing
        if prep is None:
            return None
        return prep.reference_size()

    @property
    def name(self) -> str:
        return scan_name(self.id)

    @property
    def finished(self) -> bool:
        return self.state.finished


@dataclass(frozen=True)
class ChannelStatistics:
    channel: int
    mean_max: float
    max_max: float
    firing_rate: float
    dead: bool
    selectivity: float = 0.0
    preferred_class: str = ""
    class_mean: dict[str, float] = field(default_factory=dict)
    top_class_histogram: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerStatistics:
    images_scanned: int
    channels: tuple[ChannelStatistics, ...]
    top_channels_per_class: dict[str, tuple[int, ...]]


def _time(stamp: timestamp_pb2.Timestamp, is_set: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=timezone.utc) if is_set else None


def scan_info(message: scan_service_pb2.Scan, preprocessing_warning: str = "") -> ScanInfo:
    failure = from_status(message.error) if message.HasField("error") else None
    return ScanInfo(
        id=scan_id(message.name),
        state=ScanState.from_proto(message.state),
        images_done=message.images_scanned,
        images_total=message.images_total,
        images_failed=message.images_failed,
        model=message.model,
        layers=tuple(message.layers),
        dataset=message.dataset,
        k=message.k,
        mode=TopKMode.from_proto(message.mode),
        error=failure.message if failure is not None else "",
        failure=failure,
        create_time=_time(message.create_time, message.HasField("create_time")),
        update_time=_time(message.update_time, message.HasField("update_time")),
        request_id=message.request_id,
        preprocessing=Preprocessing.from_proto(message.preprocessing)
        if message.HasField("preprocessing")
        else None,
        preprocessing_warning=preprocessing_warning,
    )


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
        response = self._call(self._neurons.GetLayerStatistics, request)
        return LayerStatistics(
            images_scanned=response.images_scanned,
            channels=tuple(
                ChannelStatistics(
                    channel=c.channel,
                    mean_max=c.mean_max,
                    max_max=c.max_max,
                    firing_rate=c.firing_rate,
                    dead=c.dead,
                    selectivity=c.selectivity,
                    preferred_class=c.preferred_class,
                    class_mean=dict(c.class_mean),
                    top_class_histogram=dict(c.top_class_histogram),
                )
                for c in response.channels
            ),
            top_channels_per_class={
                name: tuple(entry.channels)
                for name, entry in response.top_channels_per_class.items()
            },
        )
