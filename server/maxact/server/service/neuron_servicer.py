"""NeuronService: queries against a finished scan, answered from the store."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from maxact.client.kinds import ScanState, TopKKind
from maxact.server.data.reader import file_source
from maxact.server.errors import failed_precondition, invalid_argument, not_found
from maxact.server.jobs.scan_jobs import ScanJobs, scan_id_from
from maxact.server.jobs.store import ScanRecord
from maxact.server.patches.crop import PatchRenderer
from maxact.server.scan.neuron import Hit, input_box
from maxact.server.service.convert import (
    hit_to_proto,
    patch_to_proto,
    render_options_from_proto,
    scan_to_proto,
    statistics_to_proto,
)
from maxact.server.service.errors import rpc
from maxact.server.service.validate import check_channel
from maxact.v1 import neuron_service_pb2 as npb
from maxact.v1 import neuron_service_pb2_grpc
from maxact.v1 import topk_service_pb2 as tpb

_CROP_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="maxact-crop")


def _crop_or_none(
    renderer: PatchRenderer, path: Path, row: Any, layer: Any, prep: Any, channel: int
) -> Any:
    """Render one stored hit's patch from its original image (None when it can no longer be
    read)."""
    try:
        return renderer(
            file_source(0, row.image, path),
            input_box(layer.field, prep, row.y, row.x, channel),
            (row.y, row.x),
            channel,
        )
    except (OSError, ValueError):
        return None


class NeuronServicer(neuron_service_pb2_grpc.NeuronServiceServicer):
    def __init__(self, jobs: ScanJobs) -> None:
        self.jobs = jobs

    def _finished(self, name: str) -> ScanRecord:
        record = self.jobs.get(scan_id_from(name))
        if record.state is not ScanState.SUCCEEDED:
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
        kind = TopKKind.of(record.mode, request.bottom)
        rows = self.jobs.store.topk_rows(record.id, layer.name, request.channel, kind, k)
        # the dataset's folder only: listing its images is not needed to crop k of them
        root = self.jobs.datasets.root_of(record.dataset) if request.include_patches else None
        crops: list[Any] = [None] * len(rows)
        if root is not None:
            crops = list(
                _CROP_POOL.map(
                    lambda row: _crop_or_none(
                        renderer, root / row.image, row, layer, prep, request.channel
                    ),
                    rows,
                )
            )
        response = npb.GetNeuronResponse(
            images_scanned=record.images_done, mode=record.mode.to_proto()
        )
        response.scan.CopyFrom(scan_to_proto(record))
        for row, patch in zip(rows, crops, strict=True):
            box = input_box(layer.field, prep, row.y, row.x, request.channel)
            hit = Hit(row.rank, -1, row.image, row.score, (row.y, row.x), request.channel, box)
            if root is None:
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
        return statistics_to_proto(stats)
