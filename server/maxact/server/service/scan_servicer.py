"""ScanService (persisted scans) and NeuronService (queries answered from the store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from maxact.client.defaults import DEFAULT_K
from maxact.server.data.preprocess import Preprocessing, parse_mapping
from maxact.server.data.reader import file_source, upright_size
from maxact.server.errors import (
    ServiceError,
    failed_precondition,
    invalid_argument,
    not_found,
    shown,
)
from maxact.server.jobs.scan_jobs import ScanJobs, scan_id_from
from maxact.server.jobs.store import ScanRecord
from maxact.server.patches.crop import PatchRenderer
from maxact.server.scan.neuron import Hit, input_box
from maxact.server.service.convert import (
    MODE_ENUMS,
    MODES,
    hit_to_proto,
    patch_to_proto,
    preprocessing_from_proto,
    preprocessing_to_proto,
    render_options_from_proto,
)
from maxact.server.service.errors import rpc
from maxact.server.service.validate import check_channel
from maxact.v1 import neuron_service_pb2 as npb
from maxact.v1 import neuron_service_pb2_grpc, scan_service_pb2_grpc
from maxact.v1 import scan_service_pb2 as spb
from maxact.v1 import topk_service_pb2 as tpb

_STATES = {
    "queued": spb.SCAN_STATE_QUEUED,
    "running": spb.SCAN_STATE_RUNNING,
    "succeeded": spb.SCAN_STATE_SUCCEEDED,
    "failed": spb.SCAN_STATE_FAILED,
    "cancelled": spb.SCAN_STATE_CANCELLED,
}
DEFAULT_PAGE = 50
MAX_PAGE = 1000
WATCH_INTERVAL = 0.2


def scan_to_proto(record: ScanRecord) -> spb.Scan:
    """The scan as the API shows it; a damaged row (unknown state or mode, preprocessing that
    no longer parses) still converts, so one bad row never breaks ListScans."""
    try:
        preprocessing = parse_mapping(record.preprocessing, "scan")
    except ServiceError:
        preprocessing = Preprocessing()
    return spb.Scan(
        name=f"scans/{record.id}",
        model=record.model,
        layers=list(record.layers),
        dataset=record.dataset,
        k=record.k,
        preprocessing=preprocessing_to_proto(preprocessing),
        state=_STATES.get(record.state, spb.SCAN_STATE_FAILED),
        images_done=record.images_done,
        images_total=record.images_total,
        error=record.error or _unknown_state(record.state),
        mode=MODE_ENUMS.get(record.mode, 0),
        images_failed=record.images_failed,
        create_time=record.create_time,
        update_time=record.update_time,
    )


def _unknown_state(state: str) -> str:
    return "" if state in _STATES else f"damaged store row: unknown state {shown(state)}"


_CROP_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="maxact-crop")


def _stored_box(
    model: Any, layer: Any, prep: Any, path: Path | None, row: Any, channel: int
) -> tuple[int, int, int, int]:
    """A stored hit's field in model-input pixels; with per-image sizing the image's size
    (read from its header) decides the input size, hence the field."""
    size = prep.fixed_size
    if size is None:
        assert path is not None
        size = prep.input_size_for(*upright_size(file_source(0, row.image, path)))
        return input_box(model.layer(size, layer.name).field, size, row.y, row.x, channel)
    return input_box(layer.field, size, row.y, row.x, channel)


def _crop_or_none(
    renderer: PatchRenderer, path: Path, row: Any, box: tuple[int, int, int, int], channel: int
) -> Any:
    """Render one stored hit's patch from its original image (None when it can no longer be
    read)."""
    try:
        return renderer(file_source(0, row.image, path), box, (row.y, row.x), channel)
    except (OSError, ValueError):
        return None


class ScanServicer(scan_service_pb2_grpc.ScanServiceServicer):
    def __init__(self, jobs: ScanJobs) -> None:
        self.jobs = jobs

    @rpc
    async def CreateScan(
        self, request: spb.CreateScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.CreateScanResponse:
        if request.mode not in MODES:
            raise invalid_argument("INVALID_MODE", f"unknown top-k mode {request.mode}")
        preprocessing = preprocessing_from_proto(request.preprocessing)
        record = await asyncio.to_thread(
            self.jobs.create,
            request.model,
            list(request.layers),
            request.dataset,
            request.k or DEFAULT_K,
            MODES[request.mode],
            preprocessing,
        )
        model = await asyncio.to_thread(self.jobs.models.get, record.model)
        return spb.CreateScanResponse(
            scan=scan_to_proto(record),
            preprocessing_warning=model.preprocessing_warning(preprocessing),
        )

    @rpc
    async def GetScan(
        self, request: spb.GetScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.GetScanResponse:
        record = await asyncio.to_thread(self.jobs.get, scan_id_from(request.name))
        return spb.GetScanResponse(scan=scan_to_proto(record))

    @rpc
    async def ListScans(
        self, request: spb.ListScansRequest, context: grpc.aio.ServicerContext
    ) -> spb.ListScansResponse:
        size = request.page_size or DEFAULT_PAGE
        if not 0 < size <= MAX_PAGE:
            raise invalid_argument("INVALID_PAGE_SIZE", f"page_size must be in 1..{MAX_PAGE}")
        after = 0
        if request.page_token:
            token = request.page_token
            if not (token.isascii() and token.isdigit() and len(token) <= 18):
                raise invalid_argument("INVALID_PAGE_TOKEN", "page_token is not one we issued")
            after = int(request.page_token)
        records = await asyncio.to_thread(self.jobs.store.list, size + 1, after)
        page, more = records[:size], len(records) > size
        return spb.ListScansResponse(
            scans=[scan_to_proto(self.jobs.with_unrecorded(r)) for r in page],
            next_page_token=str(page[-1].seq) if more and page else "",
        )

    @rpc
    async def WatchScan(
        self, request: spb.WatchScanRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.WatchScanResponse]:
        scan_id = scan_id_from(request.name)
        last: tuple[str, int, int] | None = None
        while True:
            record = await asyncio.to_thread(self.jobs.get, scan_id)
            key = (record.state, record.images_done, record.images_failed)
            if key != last:
                last = key
                yield spb.WatchScanResponse(scan=scan_to_proto(record))
            if record.finished:
                return
            await asyncio.sleep(WATCH_INTERVAL)

    @rpc
    async def CancelScan(
        self, request: spb.CancelScanRequest, context: grpc.aio.ServicerContext
    ) -> spb.CancelScanResponse:
        record = await asyncio.to_thread(self.jobs.cancel, scan_id_from(request.name))
        return spb.CancelScanResponse(scan=scan_to_proto(record))


class NeuronServicer(neuron_service_pb2_grpc.NeuronServiceServicer):
    def __init__(self, jobs: ScanJobs) -> None:
        self.jobs = jobs

    def _finished(self, name: str) -> ScanRecord:
        record = self.jobs.get(scan_id_from(name))
        if record.state != "succeeded":
            raise failed_precondition(
                "SCAN_NOT_FINISHED",
                f"scan 'scans/{record.id}' is {record.state}; neuron queries need a finished scan",
                scan=record.id,
            )
        return record

    @rpc
    async def GetNeuron(
        self, request: npb.GetNeuronRequest, context: grpc.aio.ServicerContext
    ) -> npb.GetNeuronResponse:
        return await asyncio.to_thread(self._neuron, request)

    def _neuron(self, request: npb.GetNeuronRequest) -> npb.GetNeuronResponse:
        record = self._finished(request.scan)
        if request.layer not in record.layers:
            raise invalid_argument(
                "LAYER_NOT_FOUND",
                f"scan 'scans/{record.id}' did not scan layer {request.layer!r} "
                f"(it scanned {list(record.layers)})",
                layer=request.layer,
            )
        k = request.k or record.k
        if not 0 < k <= record.k:
            raise invalid_argument(
                "K_OUT_OF_RANGE", f"k must be in 1..{record.k} (the scan kept {record.k})"
            )
        options = render_options_from_proto(request)
        model, prep, layers = self.jobs.prepare(record)
        layer = next(entry for entry in layers if entry.name == request.layer)
        check_channel(layer, request.channel)
        renderer = (
            PatchRenderer(model, layer.name, layer.field, prep, options)
            if request.include_patches
            else None
        )
        kind = "bottom" if request.bottom else ("position" if record.mode == "position" else "top")
        rows = self.jobs.store.topk_rows(record.id, layer.name, request.channel, kind, k)
        # the dataset's folder only: listing its images is not needed to crop k of them
        per_image = prep.fixed_size is None
        root = (
            self.jobs.datasets.root_of(record.dataset)
            if request.include_patches or per_image
            else None
        )
        try:
            boxes = [
                _stored_box(
                    model, layer, prep, root / row.image if root else None, row, request.channel
                )
                for row in rows
            ]
        except OSError as exc:
            raise not_found(
                "IMAGE_NOT_FOUND",
                f"an image of dataset {record.dataset!r} can no longer be read: "
                f"{type(exc).__name__}",
            ) from None
        crops: list[Any] = [None] * len(rows)
        if root is not None and renderer is not None:
            crops = list(
                _CROP_POOL.map(
                    lambda pair: _crop_or_none(
                        renderer, root / pair[0].image, pair[0], pair[1], request.channel
                    ),
                    zip(rows, boxes, strict=True),
                )
            )
        response = npb.GetNeuronResponse(
            images_scanned=record.images_done, mode=MODE_ENUMS[record.mode]
        )
        response.scan.CopyFrom(scan_to_proto(record))
        for row, patch, box in zip(rows, crops, boxes, strict=True):
            hit = Hit(row.rank, -1, row.image, row.score, (row.y, row.x), request.channel, box)
            if not request.include_patches:
                response.patches.append(tpb.Patch(hit=hit_to_proto(hit)))
                continue
            if patch is None:
                raise not_found(
                    "IMAGE_NOT_FOUND",
                    f"image {row.image!r} of dataset {record.dataset!r} can no longer be read",
                    image=row.image,
                )
            response.patches.append(patch_to_proto(hit, patch))
        return response

    @rpc
    async def GetLayerStatistics(
        self, request: npb.GetLayerStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> npb.GetLayerStatisticsResponse:
        record = await asyncio.to_thread(self._finished, request.scan)
        stats = await asyncio.to_thread(self.jobs.store.statistics, record.id, request.layer)
        if stats is None:
            raise invalid_argument(
                "LAYER_NOT_FOUND",
                f"scan 'scans/{record.id}' did not scan layer {request.layer!r}",
                layer=request.layer,
            )
        classes = stats["classes"]
        response = npb.GetLayerStatisticsResponse(images_scanned=stats["images"])
        for channel, mean in enumerate(stats["mean"]):
            message = npb.ChannelStatistics(
                channel=channel,
                mean_max=mean,
                max_max=stats["max"][channel] if stats["max"][channel] is not None else 0.0,
                firing_rate=stats["firing_rate"][channel],
                dead=stats["dead"][channel],
            )
            if "selectivity" in stats:
                message.selectivity = stats["selectivity"][channel]
                message.preferred_class = classes[stats["preferred_class"][channel]]
                for class_index, name in enumerate(classes):
                    value = stats["class_mean"][class_index][channel]
                    if value is not None:
                        message.class_mean[name] = value
            if "top_class_histogram" in stats:
                for class_index, count in enumerate(stats["top_class_histogram"][channel]):
                    if count:
                        message.top_class_histogram[classes[class_index]] = count
            response.channels.append(message)
        for name, channels in (stats.get("top_units_per_class") or {}).items():
            response.top_channels_per_class[name].channels.extend(channels)
        return response
