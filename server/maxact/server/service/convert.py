"""Engine objects <-> API messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from maxact.common.defaults import DEFAULT_MASK_QUANTILE
from maxact.common.kinds import RenderMode, TopKMode
from maxact.common.records import ImageSkipped
from maxact.common.statistics import LayerStatistics
from maxact.server.core import topk
from maxact.server.core.neurons import StoredNeuron
from maxact.server.data.preprocess import Preprocessing, ResolvedPreprocessing, parse_mapping
from maxact.server.errors import ServiceError
from maxact.server.jobs.store import ScanError, ScanRecord
from maxact.server.ops.status import status_proto
from maxact.server.patches.render import RenderOptions
from maxact.server.rf import AxisGeometry, TensorField
from maxact.server.scan.neuron import Hit
from maxact.v1 import common_pb2, neuron_service_pb2, scan_service_pb2, topk_service_pb2


def render_options_from_proto(message: Any) -> RenderOptions:
    """The render fields (render, mask_quantile, patch_size) of a TopKQuery, a
    GetNeuronRequest or a GetClassChannelsRequest, validated."""
    from maxact.server.errors import invalid_argument

    try:
        mode = RenderMode.from_proto(message.render)
    except ValueError as error:
        raise invalid_argument("INVALID_RENDER", str(error)) from None
    return RenderOptions(
        mode=mode,
        mask_quantile=message.mask_quantile
        if message.HasField("mask_quantile")
        else DEFAULT_MASK_QUANTILE,
        patch_size=message.patch_size,
    ).validated()


def preprocessing_from_proto(message: common_pb2.Preprocessing) -> Preprocessing:
    """Unset proto fields become None so model defaults can fill them."""
    from maxact.server.errors import invalid_argument

    try:
        return Preprocessing.from_proto(message)
    except ValueError as exc:
        raise invalid_argument("INVALID_PREPROCESSING", str(exc)) from None


def preprocessing_to_proto(prep: Preprocessing | ResolvedPreprocessing) -> common_pb2.Preprocessing:
    request = prep.as_request() if isinstance(prep, ResolvedPreprocessing) else prep
    return request.to_proto()


def geometry_to_proto(height: AxisGeometry, width: AxisGeometry) -> common_pb2.FieldGeometry:
    return common_pb2.FieldGeometry(
        size=[float(height.size), float(width.size)],
        stride=[float(height.stride), float(width.stride)],
        padding=[float(height.padding), float(width.padding)],
    )


def intervals(pairs: tuple[tuple[int, int], ...]) -> list[common_pb2.Interval]:
    return [common_pb2.Interval(start=start, stop=stop) for start, stop in pairs]


def field_to_proto(field: TensorField) -> common_pb2.ReceptiveField:
    message = common_pb2.ReceptiveField(spatial=field.spatial, global_context=field.global_context)
    if not field.spatial:
        return _whole_image(message, field)
    message.geometry.CopyFrom(geometry_to_proto(*field.geometry()))
    if field.tokens is not None:
        message.tokens.CopyFrom(
            common_pb2.TokenGrid(
                height=field.tokens.height, width=field.tokens.width, prefix=field.tokens.prefix
            )
        )
    message.rows.extend(intervals(field.rows()))
    message.cols.extend(intervals(field.cols()))
    for group in field.groups:
        message.channel_groups.append(
            common_pb2.ChannelGroup(
                first_channel=group.first,
                last_channel=group.last,
                geometry=geometry_to_proto(group.height, group.width),
                rows=intervals(group.rows),
                cols=intervals(group.cols),
            )
        )
    return message


def box_to_proto(box: tuple[int, int, int, int]) -> common_pb2.Box:
    return common_pb2.Box(y0=box[0], x0=box[1], y1=box[2], x1=box[3])


def hit_to_proto(
    hit: Hit, original_box: tuple[int, int, int, int] | None = None
) -> topk_service_pb2.Hit:
    message = topk_service_pb2.Hit(
        rank=hit.rank,
        image=hit.image_id,
        score=hit.score,
        unit=common_pb2.Unit(y=hit.unit[0], x=hit.unit[1]),
        input_box=box_to_proto(hit.box),
        channel=hit.channel,
    )
    if original_box is not None:
        message.box.CopyFrom(box_to_proto(original_box))
    return message


def _whole_image(
    message: common_pb2.ReceptiveField, field: TensorField
) -> common_pb2.ReceptiveField:
    """A flat tensor sees the whole input: one unit whose field is every pixel."""
    height, width = field.input_height, field.input_width
    geometry = common_pb2.FieldGeometry(
        size=[height, width], stride=[height, width], padding=[0, 0]
    )
    rows = [common_pb2.Interval(start=0, stop=height)]
    cols = [common_pb2.Interval(start=0, stop=width)]
    message.geometry.CopyFrom(geometry)
    message.rows.extend(rows)
    message.cols.extend(cols)
    message.channel_groups.append(
        common_pb2.ChannelGroup(
            first_channel=0,
            last_channel=field.channels - 1,
            geometry=geometry,
            rows=rows,
            cols=cols,
        )
    )
    message.global_context = True
    return message


def patch_to_proto(hit: Hit, patch: Any) -> topk_service_pb2.Patch:
    """A rendered `patches.PatchImage` of `hit`."""
    return topk_service_pb2.Patch(
        hit=hit_to_proto(hit, patch.box),
        png=patch.png,
        clipped_fraction=patch.clipped_fraction,
        patch_box=box_to_proto(patch.patch_box),
    )


def topk_event_to_proto(event: topk.TopKEvent) -> topk_service_pb2.TopKEvent:
    """A top-k stream's domain event as the TopKEvent both top-k RPCs send."""
    pb = topk_service_pb2
    match event:
        case topk.Progress():
            return pb.TopKEvent(
                progress=pb.Progress(
                    images_scanned=event.images_scanned,
                    images_total=event.images_total,
                    images_failed=event.images_failed,
                    preprocessing_warning=event.preprocessing_warning,
                )
            )
        case topk.PartialRanking():
            hits = [hit_to_proto(hit) for hit in event.hits]
            return pb.TopKEvent(
                partial=pb.PartialTopK(hits=hits, images_scanned=event.images_scanned)
            )
        case ImageSkipped():
            return pb.TopKEvent(skipped=pb.ImageSkipped(image=event.image, reason=event.reason))
        case topk.PatchReady():
            return pb.TopKEvent(patch=patch_to_proto(event.hit, event.patch))
        case topk.Done():
            return pb.TopKEvent(
                done=pb.Done(
                    images_scanned=event.images_scanned,
                    images_failed=event.images_failed,
                    k=event.query.k,
                    mode=TopKMode(event.query.mode).to_proto(),
                    preprocessing=preprocessing_to_proto(event.preprocessing),
                    preprocessing_warning=event.preprocessing_warning,
                )
            )


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def scan_error_to_status(error: ScanError) -> status_pb2.Status:
    """A failed scan's error as the same rich status a failed call carries."""
    return status_proto(error.code, error.reason, error.message)


def scan_to_proto(record: ScanRecord) -> scan_service_pb2.Scan:
    """The scan as the API shows it; a damaged row (preprocessing that no longer parses)
    still converts, so one bad row never breaks ListScans."""
    try:
        preprocessing = parse_mapping(record.preprocessing, "scan")
    except ServiceError:
        preprocessing = Preprocessing()
    message = scan_service_pb2.Scan(
        name=record.name,
        model=record.model,
        layers=list(record.layers),
        dataset=record.dataset,
        k=record.k,
        preprocessing=preprocessing_to_proto(preprocessing),
        state=record.state.to_proto(),
        images_scanned=record.images_done,
        images_total=record.images_total,
        mode=record.mode.to_proto(),
        images_failed=record.images_failed,
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        request_id=record.request_id,
    )
    if record.error is not None:
        message.error.CopyFrom(scan_error_to_status(record.error))
    return message


def statistics_to_proto(stats: LayerStatistics) -> neuron_service_pb2.GetLayerStatisticsResponse:
    """A layer's stored statistics as the response."""
    npb = neuron_service_pb2
    classes = stats.classes
    selectivity, preferred, class_mean = stats.selectivity, stats.preferred_class, stats.class_mean
    response = npb.GetLayerStatisticsResponse(images_scanned=stats.images)
    for channel, mean in enumerate(stats.mean):
        top = stats.max[channel]
        message = npb.ChannelStatistics(
            channel=channel,
            mean_max=mean,
            max_max=top if top is not None else 0.0,
            firing_rate=stats.firing_rate[channel],
            dead=stats.dead[channel],
        )
        if selectivity is not None and preferred is not None and class_mean is not None:
            message.selectivity = selectivity[channel]
            message.preferred_class = classes[preferred[channel]]
            for class_index, name in enumerate(classes):
                value = class_mean[class_index][channel]
                if value is not None:
                    message.class_mean[name] = value
        if stats.top_class_histogram is not None:
            for class_index, count in enumerate(stats.top_class_histogram[channel]):
                if count:
                    message.top_class_histogram[classes[class_index]] = count
        response.channels.append(message)
    top_units = stats.top_units_per_class if selectivity is not None else None
    for name, channels in (top_units or {}).items():
        response.top_channels_per_class[name].channels.extend(channels)
    return response


def neuron_patches_to_proto(answer: StoredNeuron) -> list[topk_service_pb2.Patch]:
    """A neuron's stored hits, each with its patch when they were cropped."""
    if answer.patches:
        return [
            patch_to_proto(hit, patch)
            for hit, patch in zip(answer.hits, answer.patches, strict=True)
        ]
    return [topk_service_pb2.Patch(hit=hit_to_proto(hit)) for hit in answer.hits]
