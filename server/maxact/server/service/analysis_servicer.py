"""AnalysisService: the class answer, one class's channels with patches, scan comparison and
a model's class names, all answered from finished scans in the store (no inference)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np

from maxact.client.kinds import TopKKind
from maxact.server.analysis.classes import class_answer
from maxact.server.analysis.compare import compare_channels
from maxact.server.errors import failed_precondition, invalid_argument
from maxact.server.jobs.scan_jobs import ScanJobs, scan_id_from
from maxact.server.jobs.store import ScanRecord
from maxact.server.models.class_names import class_names
from maxact.server.service.convert import scan_to_proto
from maxact.server.service.errors import rpc
from maxact.server.service.neuron_servicer import NeuronServicer
from maxact.v1 import analysis_service_pb2 as apb
from maxact.v1 import analysis_service_pb2_grpc
from maxact.v1 import neuron_service_pb2 as npb

DEFAULT_SELECTIVE = 0.5
DEFAULT_TOP = 10
MAX_TOP = 1000


def _finished(jobs: ScanJobs, name: str) -> ScanRecord:
    record = jobs.get(scan_id_from(name))
    if record.state != "succeeded":
        raise failed_precondition(
            "SCAN_NOT_FINISHED",
            f"scan 'scans/{record.id}' is {record.state}; this question needs a finished scan",
            scan=record.id,
        )
    return record


def _layer_statistics(jobs: ScanJobs, record: ScanRecord, layer: str) -> dict[str, Any]:
    stats = jobs.store.statistics(record.id, layer)
    if stats is None:
        raise invalid_argument(
            "LAYER_NOT_FOUND",
            f"scan 'scans/{record.id}' did not scan layer {layer!r} "
            f"(it scanned {list(record.layers)})",
            layer=layer,
        )
    return stats


def _class_means(record: ScanRecord, stats: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """(class names, m [K, C]) of the classes with at least one scanned image."""
    names = stats.get("classes") or []
    if not names:
        raise failed_precondition(
            "SCAN_NOT_LABELLED",
            f"scan 'scans/{record.id}' is of dataset {record.dataset!r}, which has no labels "
            "(class subfolders or a labels.csv with path,label at its root)",
            scan=record.id,
        )
    if "class_mean_clipped" not in stats or "class_images" not in stats:
        raise failed_precondition(
            "SCAN_STATISTICS_OUTDATED",
            f"scan 'scans/{record.id}' was made by an older server without clipped class "
            "means; scan the dataset again",
            scan=record.id,
        )
    rows = [
        (name, row)
        for name, row in zip(names, stats["class_mean_clipped"], strict=True)
        if all(v is not None for v in row)
    ]
    if len(rows) < 2:
        raise failed_precondition(
            "TOO_FEW_CLASSES",
            f"scan 'scans/{record.id}' has images of {len(rows)} class(es); class questions "
            "need at least two",
            scan=record.id,
        )
    return [name for name, _ in rows], np.asarray([row for _, row in rows], dtype=np.float64)


def _check_top(top: int) -> int:
    top = top or DEFAULT_TOP
    if not 0 < top <= MAX_TOP:
        raise invalid_argument("INVALID_TOP", f"top must be in 1..{MAX_TOP}, got {top}")
    return top


class AnalysisServicer(analysis_service_pb2_grpc.AnalysisServiceServicer):
    def __init__(self, jobs: ScanJobs, neurons: NeuronServicer) -> None:
        self.jobs = jobs
        self.neurons = neurons  # patches of a class's channels come from GetNeuron

    def _answer(
        self, scan: str, layer: str, threshold: float, top: int
    ) -> tuple[ScanRecord, dict[str, Any], Any]:
        if not 0.0 <= threshold <= 1.0:
            raise invalid_argument(
                "INVALID_THRESHOLD", f"the selectivity threshold must be in 0..1, got {threshold}"
            )
        record = _finished(self.jobs, scan)
        stats = _layer_statistics(self.jobs, record, layer)
        names, m = _class_means(record, stats)
        images = dict(zip(stats["classes"], stats["class_images"], strict=True))
        answer = class_answer(
            names,
            np.asarray([images[name] for name in names]),
            m,
            np.asarray(stats["firing_rate"]),
            np.asarray(stats["dead"]),
            threshold,
            _check_top(top),
        )
        return record, stats, answer

    @rpc
    async def GetClassAnswer(
        self, request: apb.GetClassAnswerRequest, context: grpc.aio.ServicerContext
    ) -> apb.GetClassAnswerResponse:
        threshold = (
            request.selective_threshold
            if request.HasField("selective_threshold")
            else DEFAULT_SELECTIVE
        )
        record, stats, answer = await asyncio.to_thread(
            self._answer, request.scan, request.layer, threshold, request.top
        )
        response = apb.GetClassAnswerResponse(
            layer=request.layer,
            images_scanned=stats["images"],
            channels=answer.channels,
            dead=answer.dead,
            non_selective=answer.non_selective,
            uncovered=answer.uncovered,
        )
        response.scan.CopyFrom(scan_to_proto(record))
        for entry in answer.classes:
            response.classes.append(
                apb.ClassAnswer(
                    name=entry.name,
                    images=entry.images,
                    selective_channels=entry.selective_channels,
                    top_channels=[_channel(c) for c in entry.top_channels],
                    selective_details=[_channel(c) for c in entry.selective_details],
                )
            )
        for a, b, similarity in answer.confusable:
            response.confusable.append(apb.ConfusablePair(classes=[a, b], similarity=similarity))
        return response

    @rpc
    async def GetClassChannels(
        self, request: apb.GetClassChannelsRequest, context: grpc.aio.ServicerContext
    ) -> apb.GetClassChannelsResponse:
        record, _, answer = await asyncio.to_thread(
            self._answer, request.scan, request.layer, DEFAULT_SELECTIVE, request.top
        )
        found = next((c for c in answer.classes if c.name == request.class_name), None)
        if found is None:
            raise invalid_argument(
                "CLASS_NOT_FOUND",
                f"scan 'scans/{record.id}' has no class {request.class_name[:200]!r} "
                f"(its classes: {[c.name for c in answer.classes][:20]})",
                class_name=request.class_name[:200],
            )
        response = apb.GetClassChannelsResponse(class_name=found.name, images=found.images)
        response.scan.CopyFrom(scan_to_proto(record))
        for channel in found.top_channels:
            neuron = await self.neurons.GetNeuron(
                npb.GetNeuronRequest(
                    scan=f"scans/{record.id}",
                    layer=request.layer,
                    channel=channel.channel,
                    k=request.k,
                    include_patches=True,
                    patch_size=request.patch_size,
                    render=request.render,
                    mask_quantile=request.mask_quantile
                    if request.HasField("mask_quantile")
                    else None,
                ),
                context,
            )
            response.channels.append(
                apb.ClassChannelPatches(channel=_channel(channel), patches=neuron.patches)
            )
        return response

    @rpc
    async def CompareScans(
        self, request: apb.CompareScansRequest, context: grpc.aio.ServicerContext
    ) -> apb.CompareScansResponse:
        return await asyncio.to_thread(self._compare, request)

    def _compare(self, request: apb.CompareScansRequest) -> apb.CompareScansResponse:
        a = _finished(self.jobs, request.scan_a)
        b = _finished(self.jobs, request.scan_b)
        if a.dataset != b.dataset or self.jobs.store.image_ids(a.id) != self.jobs.store.image_ids(
            b.id
        ):
            raise failed_precondition(
                "DATASET_MISMATCH",
                f"scans 'scans/{a.id}' (dataset {a.dataset!r}) and 'scans/{b.id}' (dataset "
                f"{b.dataset!r}) did not scan the same images; compare needs one dataset",
            )
        stats_a = _layer_statistics(self.jobs, a, request.layer)
        stats_b = _layer_statistics(self.jobs, b, request.layer)
        shape_a, shape_b = self._shape(a, request.layer), self._shape(b, request.layer)
        if shape_a != shape_b:
            raise invalid_argument(
                "LAYER_SHAPE_MISMATCH",
                f"layer {request.layer!r} has shape {list(shape_a)} in model {a.model!r} but "
                f"{list(shape_b)} in model {b.model!r}; compare needs the same shape",
                layer=request.layer,
            )
        channels = len(stats_a["mean"])
        k = min(a.k, b.k, max(stats_a["images"], 1))
        top_a = [self._top_images(a, request.layer, c, k) for c in range(channels)]
        top_b = [self._top_images(b, request.layer, c, k) for c in range(channels)]
        changes = compare_channels(
            top_a,
            top_b,
            k,
            (stats_a["firing_rate"], stats_b["firing_rate"]),
            (stats_a["mean"], stats_b["mean"]),
        )
        response = apb.CompareScansResponse(layer=request.layer, k=k)
        response.scan_a.CopyFrom(scan_to_proto(a))
        response.scan_b.CopyFrom(scan_to_proto(b))
        for change in changes:
            response.channels.append(
                apb.ChannelChange(
                    channel=change.channel,
                    overlap=change.overlap,
                    firing_rate_a=change.firing_rate[0],
                    firing_rate_b=change.firing_rate[1],
                    mean_a=change.mean[0],
                    mean_b=change.mean[1],
                )
            )
        return response

    def _shape(self, record: ScanRecord, layer: str) -> tuple[int, ...]:
        _, _, layers = self.jobs.prepare(record)
        return next(entry.shape for entry in layers if entry.name == layer)

    def _top_images(self, record: ScanRecord, layer: str, channel: int, k: int) -> list[str]:
        """The channel's k best distinct images (position mode may list an image twice)."""
        kind = TopKKind.of(record.mode, bottom=False)
        rows = self.jobs.store.topk_rows(record.id, layer, channel, kind, record.k)
        return list(dict.fromkeys(row.image for row in rows))[:k]

    @rpc
    async def GetClassNames(
        self, request: apb.GetClassNamesRequest, context: grpc.aio.ServicerContext
    ) -> apb.GetClassNamesResponse:
        model = await asyncio.to_thread(self.jobs.models.get, request.model)
        layer, names = await asyncio.to_thread(class_names, model)
        return apb.GetClassNamesResponse(layer=layer, names=names)


def _channel(channel: Any) -> apb.ClassChannel:
    return apb.ClassChannel(
        channel=channel.channel,
        mean=channel.mean,
        contrast=channel.contrast,
        selectivity=channel.selectivity,
    )
