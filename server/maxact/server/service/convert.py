"""Engine objects <-> API messages."""

from __future__ import annotations

from typing import Any

from maxact.server.data.preprocess import Preprocessing, ResolvedPreprocessing
from maxact.server.patches.render import DEFAULT_MASK_QUANTILE, RenderOptions
from maxact.server.rf import AxisGeometry, TensorField
from maxact.server.scan.neuron import Hit
from maxact.v1 import common_pb2, topk_service_pb2

MODES = {
    topk_service_pb2.TOP_K_MODE_UNSPECIFIED: "image",
    topk_service_pb2.TOP_K_MODE_IMAGE: "image",
    topk_service_pb2.TOP_K_MODE_POSITION: "position",
}
MODE_ENUMS = {
    "image": topk_service_pb2.TOP_K_MODE_IMAGE,
    "position": topk_service_pb2.TOP_K_MODE_POSITION,
}

_RENDERS = {
    common_pb2.PATCH_RENDER_UNSPECIFIED: "rf",
    common_pb2.PATCH_RENDER_RF: "rf",
    common_pb2.PATCH_RENDER_HEATMAP: "heatmap",
    common_pb2.PATCH_RENDER_MASK: "mask",
}


def render_options_from_proto(message: Any) -> RenderOptions:
    """The render fields (render, mask_quantile, patch_size) of a TopKQuery or a
    GetNeuronRequest, validated."""
    from maxact.server.errors import invalid_argument

    if message.render not in _RENDERS:
        raise invalid_argument("INVALID_RENDER", f"unknown patch render {message.render}")
    return RenderOptions(
        mode=_RENDERS[message.render],
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
