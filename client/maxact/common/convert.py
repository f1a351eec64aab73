"""Proto messages -> the typed results in maxact.common.results (one direction only)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from google.protobuf import timestamp_pb2

from maxact.common import results as t
from maxact.common.kinds import RENDER_MODES, RenderMode, ScanState, TopKMode
from maxact.common.preprocessing import Preprocessing
from maxact.common.resources import scan_id
from maxact.v1 import (
    analysis_service_pb2,
    common_pb2,
    dataset_service_pb2,
    model_service_pb2,
    neuron_service_pb2,
    receptive_field_service_pb2,
    scan_service_pb2,
    topk_service_pb2,
)


def _axis_pair(values: Iterable[float]) -> tuple[float, float]:
    items = [float(v) for v in values]
    if len(items) != 2:
        return (0.0, 0.0)
    return (items[0], items[1])


def _intervals(values: Iterable[common_pb2.Interval]) -> tuple[t.Interval, ...]:
    return tuple((int(i.start), int(i.stop)) for i in values)


def box(msg: common_pb2.Box) -> t.BoxYX:
    return (int(msg.y0), int(msg.x0), int(msg.y1), int(msg.x1))


def set_render(
    message: topk_service_pb2.TopKQuery
    | neuron_service_pb2.GetNeuronRequest
    | analysis_service_pb2.GetClassChannelsRequest,
    render: str,
    mask_quantile: float | None,
    patch_size: int,
) -> None:
    """Set the render fields of a TopKQuery, GetNeuronRequest or GetClassChannelsRequest (the
    server validates values)."""
    if render not in RENDER_MODES:
        raise ValueError(f"render must be one of {sorted(RENDER_MODES)}, not {render!r}")
    message.render = RenderMode(render).to_proto()
    if mask_quantile is not None:
        message.mask_quantile = mask_quantile
    message.patch_size = patch_size


def patch(msg: topk_service_pb2.Patch) -> t.Patch:
    return t.Patch(
        hit(msg.hit),
        bytes(msg.png),
        patch_box=box(msg.patch_box) if msg.HasField("patch_box") else None,
        clipped_fraction=float(msg.clipped_fraction),
    )


def geometry(msg: common_pb2.FieldGeometry) -> t.FieldGeometry:
    return t.FieldGeometry(_axis_pair(msg.size), _axis_pair(msg.stride), _axis_pair(msg.padding))


def receptive_field(msg: common_pb2.ReceptiveField) -> t.ReceptiveField:
    return t.ReceptiveField(
        spatial=msg.spatial,
        geometry=geometry(msg.geometry),
        channel_groups=tuple(
            t.ChannelGroup(
                first_channel=g.first_channel,
                last_channel=g.last_channel,
                geometry=geometry(g.geometry),
                rows=_intervals(g.rows),
                cols=_intervals(g.cols),
            )
            for g in msg.channel_groups
        ),
        global_context=msg.global_context,
        rows=_intervals(msg.rows),
        cols=_intervals(msg.cols),
        tokens=(
            t.TokenGrid(msg.tokens.height, msg.tokens.width, msg.tokens.prefix)
            if msg.HasField("tokens")
            else None
        ),
    )


def tensor(msg: model_service_pb2.TensorInfo) -> t.TensorInfo:
    return t.TensorInfo(msg.name, msg.element_type, tuple(int(d) for d in msg.shape))


def model_summary(msg: model_service_pb2.ModelSummary) -> t.ModelSummary:
    return t.ModelSummary(msg.name, int(msg.size_bytes), msg.loaded)


def layer(msg: model_service_pb2.Layer) -> t.LayerInfo:
    rf = receptive_field(msg.receptive_field) if msg.HasField("receptive_field") else None
    return t.LayerInfo(msg.name, msg.op, tuple(int(d) for d in msg.shape), rf, msg.field_error)


def model_info(msg: model_service_pb2.GetModelResponse) -> t.ModelInfo:
    return t.ModelInfo(
        name=msg.name,
        inputs=tuple(tensor(i) for i in msg.inputs),
        outputs=tuple(tensor(o) for o in msg.outputs),
        default_preprocessing=Preprocessing.from_proto(msg.default_preprocessing),
        input_height=msg.input_height,
        input_width=msg.input_width,
        layers=tuple(layer(x) for x in msg.layers),
    )


def field_info(msg: receptive_field_service_pb2.GetReceptiveFieldResponse) -> t.FieldInfo:
    return t.FieldInfo(
        model=msg.model,
        layer=msg.layer,
        input_name=msg.input_name,
        input_height=msg.input_height,
        input_width=msg.input_width,
        shape=tuple(int(d) for d in msg.shape),
        receptive_field=receptive_field(msg.receptive_field),
        box=box(msg.box) if msg.HasField("box") else None,
        box_unclipped=box(msg.box_unclipped) if msg.HasField("box_unclipped") else None,
    )


def dataset_summary(msg: dataset_service_pb2.DatasetSummary) -> t.DatasetSummary:
    return t.DatasetSummary(
        msg.name, int(msg.image_count), tuple(msg.labels), int(msg.size_bytes), msg.unreadable
    )


def hit(msg: topk_service_pb2.Hit) -> t.Hit:
    return t.Hit(
        rank=msg.rank,
        image=msg.image,
        score=msg.score,
        unit=(msg.unit.y, msg.unit.x),
        box=box(msg.box),
        input_box=box(msg.input_box),
        channel=msg.channel,
    )


def topk_event(
    response: topk_service_pb2.StreamTopKResponse | topk_service_pb2.StreamTopKImagesResponse,
) -> t.TopKEvent | None:
    """The typed event of one stream message (both streams carry the same TopKEvent); None
    for an empty (unknown/newer) event."""
    msg = response.event
    kind = msg.WhichOneof("event")
    if kind == "progress":
        p = msg.progress
        return t.Progress(
            int(p.images_scanned),
            int(p.images_total),
            int(p.images_failed),
            p.preprocessing_warning,
        )
    if kind == "partial":
        partial = msg.partial
        return t.PartialTopK(tuple(hit(h) for h in partial.hits), int(partial.images_scanned))
    if kind == "patch":
        return patch(msg.patch)
    if kind == "skipped":
        return t.ImageSkipped(msg.skipped.image, msg.skipped.reason)
    if kind == "done":
        d = msg.done
        return t.Done(
            int(d.images_scanned),
            int(d.images_failed),
            d.k,
            _mode_name(d.mode),
            Preprocessing.from_proto(d.preprocessing) if d.HasField("preprocessing") else None,
            d.preprocessing_warning,
        )
    return None


def _mode_name(value: int) -> str:
    try:
        return TopKMode.from_proto(value).value
    except ValueError:  # a mode newer than this client
        return ""


def _time(stamp: timestamp_pb2.Timestamp, is_set: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=timezone.utc) if is_set else None


def scan_summary(message: scan_service_pb2.Scan, preprocessing_warning: str = "") -> t.ScanSummary:
    return t.ScanSummary(
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
        error=message.error.message if message.HasField("error") else "",
        create_time=_time(message.create_time, message.HasField("create_time")),
        update_time=_time(message.update_time, message.HasField("update_time")),
        request_id=message.request_id,
        preprocessing=Preprocessing.from_proto(message.preprocessing)
        if message.HasField("preprocessing")
        else None,
        preprocessing_warning=preprocessing_warning,
    )


def layer_statistics(response: neuron_service_pb2.GetLayerStatisticsResponse) -> t.LayerStatistics:
    return t.LayerStatistics(
        images_scanned=response.images_scanned,
        channels=tuple(
            t.ChannelStatistics(
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
            name: tuple(entry.channels) for name, entry in response.top_channels_per_class.items()
        },
    )


def class_channel(message: analysis_service_pb2.ClassChannel) -> t.ClassChannel:
    return t.ClassChannel(
        channel=message.channel,
        mean=message.mean,
        contrast=message.contrast,
        selectivity=message.selectivity,
    )


def class_answer(response: analysis_service_pb2.GetClassAnswerResponse) -> t.LayerClassAnswer:
    return t.LayerClassAnswer(
        scan=scan_id(response.scan.name),
        layer=response.layer,
        images_scanned=response.images_scanned,
        channels=response.channels,
        dead=tuple(response.dead),
        non_selective=tuple(response.non_selective),
        classes=tuple(
            t.ClassAnswer(
                name=c.name,
                images=c.images,
                selective_channels=tuple(c.selective_channels),
                top_channels=tuple(class_channel(x) for x in c.top_channels),
                selective=tuple(class_channel(x) for x in c.selective_details),
            )
            for c in response.classes
        ),
        uncovered=tuple(response.uncovered),
        confusable=tuple(
            t.ConfusablePair((p.classes[0], p.classes[1]), p.similarity)
            for p in response.confusable
        ),
    )


def class_channels(
    response: analysis_service_pb2.GetClassChannelsResponse, layer: str
) -> t.ClassChannels:
    return t.ClassChannels(
        scan=scan_id(response.scan.name),
        layer=layer,
        class_name=response.class_name,
        images=response.images,
        channels=tuple(
            t.ClassChannelPatches(class_channel(c.channel), tuple(patch(p) for p in c.patches))
            for c in response.channels
        ),
    )


def comparison(response: analysis_service_pb2.CompareScansResponse) -> t.ScanComparison:
    return t.ScanComparison(
        a=scan_id(response.scan_a.name),
        b=scan_id(response.scan_b.name),
        layer=response.layer,
        k=response.k,
        channels=tuple(
            t.ChannelChange(
                channel=c.channel,
                overlap=c.overlap,
                firing_rate=(c.firing_rate_a, c.firing_rate_b),
                mean=(c.mean_a, c.mean_b),
            )
            for c in response.channels
        ),
    )
