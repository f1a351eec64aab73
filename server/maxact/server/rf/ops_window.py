"""Sliding-window ops: Conv, ConvTranspose, MaxPool / AveragePool / LpPool."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import onnx

from maxact.server.rf.axis import AxisField, transposed_window_axis, window_axis
from maxact.server.rf.context import Context, attr
from maxact.server.rf.state import (
    FLAT,
    Const,
    Flat,
    Group,
    Spatial,
    State,
    Unsupported,
    groups_in,
    map_axes,
    merge_groups,
    on_image,
    union_groups,
)


def _nchw(x: Spatial, op: str) -> None:
    if (x.rank, x.c_axis, x.h_axis, x.w_axis) != (4, 1, 2, 3):
        raise Unsupported(f"{op} needs a 2-D NCHW input")


def _same_total(n: int, n_out: int, k: int, s: int, d: int) -> int:
    return max((n_out - 1) * s + (k - 1) * d + 1 - n, 0)


def window_pads(
    node: onnx.NodeProto,
    sizes: Sequence[int],
    kernel: list[int],
    strides: list[int],
    dils: list[int],
) -> list[int]:
    """Begin pads per spatial axis after resolving auto_pad (SAME depends on the input size)."""
    mode = attr(node, "auto_pad", "NOTSET")
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        totals = [
            _same_total(n, math.ceil(n / s), k, s, d)
            for n, k, s, d in zip(sizes, kernel, strides, dils, strict=True)
        ]
        return [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in totals]
    if mode == "VALID":
        return [0, 0]
    pads = list(attr(node, "pads", [0, 0, 0, 0]))
    return pads[:2]


def transposed_pads(
    node: onnx.NodeProto,
    sizes: Sequence[int],
    outs: Sequence[int],
    kernel: list[int],
    strides: list[int],
    dils: list[int],
) -> list[int]:
    """ConvTranspose begin pads: from attributes, or from output_shape / auto_pad."""
    mode = attr(node, "auto_pad", "NOTSET")
    if attr(node, "output_shape") is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
        opad = list(attr(node, "output_padding", [0, 0]))
        pads = []
        for k in range(2):
            total = strides[k] * (sizes[k] - 1) + opad[k] + (kernel[k] - 1) * dils[k] + 1 - outs[k]
            pads.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
        return pads
    if mode == "VALID":
        return [0, 0]
    return list(attr(node, "pads", [0, 0, 0, 0]))[:2]


def _geometry(node: onnx.NodeProto, kernel: list[int]) -> tuple[list[int], list[int]]:
    strides = list(attr(node, "strides", [1, 1]))
    dils = list(attr(node, "dilations", [1, 1]))
    if len(kernel) != 2:
        raise Unsupported(f"{node.op_type} with a {len(kernel)}-D kernel")
    return strides, dils


AxisWindow = Callable[[AxisField, int, int, int, int, int], AxisField]


def _windows(
    window: AxisWindow,
    out_shape: tuple[int, ...],
    kernel: list[int],
    strides: list[int],
    dils: list[int],
    pads: list[int],
) -> tuple[Callable[[AxisField], AxisField], Callable[[AxisField], AxisField]]:
    """The (height, width) axis ops of one 2-D window op on an NCHW output."""

    def fh(a: AxisField) -> AxisField:
        return window(a, out_shape[2], kernel[0], strides[0], dils[0], pads[0])

    def fw(a: AxisField) -> AxisField:
        return window(a, out_shape[3], kernel[1], strides[1], dils[1], pads[1])

    return fh, fw


def _channel_mixing(
    ctx: Context, node: onnx.NodeProto, ins: list[State], window: AxisWindow, transposed: bool
) -> list[State]:
    """Conv / ConvTranspose: each output channel block reads its input block through a window."""
    x = ins[0]
    if any(not isinstance(s, Const) for s in ins[1:]):
        raise Unsupported(f"{node.op_type} weights depend on the image")
    if isinstance(x, Flat):
        return [FLAT]
    assert isinstance(x, Spatial)
    _nchw(x, node.op_type)
    wshape = ctx.shape(node.input[1])
    kernel = list(attr(node, "kernel_shape", wshape[2:]))
    strides, dils = _geometry(node, kernel)
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    if transposed:
        pads = transposed_pads(node, in_shape[2:], out_shape[2:], kernel, strides, dils)
    else:
        pads = window_pads(node, in_shape[2:], kernel, strides, dils)
    fh, fw = _windows(window, out_shape, kernel, strides, dils, pads)
    groups = _blocks(x, int(attr(node, "group", 1)), in_shape[1], out_shape[1], fh, fw)
    return [Spatial(4, 1, 2, 3, out_shape[1], tuple(groups), x.global_context)]


def conv(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Conv: one window per axis, stride s."""
    return _channel_mixing(ctx, node, ins, window_axis, transposed=False)


def conv_transpose(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """ConvTranspose: the stride becomes 1/s; pads from attributes or output_shape/auto_pad."""
    return _channel_mixing(ctx, node, ins, transposed_window_axis, transposed=True)


def _blocks(
    x: Spatial,
    group: int,
    cin: int,
    cout: int,
    fh: Callable[[AxisField], AxisField],
    fw: Callable[[AxisField], AxisField],
) -> list[Group]:
    """Grouped channel mixing: output block b reads input block b (cached per distinct field)."""
    cin_g, cout_g = cin // group, cout // group
    unions: dict[tuple[int, ...], Group] = {}
    done: dict[int, tuple[AxisField, AxisField]] = {}
    out: list[Group] = []
    for b in range(group):
        parts = groups_in(x.groups, b * cin_g, (b + 1) * cin_g - 1)
        key = tuple(id(p) for p in parts)
        if key not in unions:
            unions[key] = union_groups(parts, 0, 0)
        u = unions[key]
        if id(u) not in done:
            done[id(u)] = (fh(u.h), fw(u.w))
        h, w = done[id(u)]
        out.append(Group(b * cout_g, (b + 1) * cout_g - 1, h, w))
    return merge_groups(out)


@on_image
def pool(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Max/Average/Lp pooling: a per-channel window (ceil_mode shows in the output size)."""
    _nchw(x, node.op_type)
    kernel = list(attr(node, "kernel_shape"))
    strides, dils = _geometry(node, kernel)
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    pads = window_pads(node, in_shape[2:], kernel, strides, dils)
    fh, fw = _windows(window_axis, out_shape, kernel, strides, dils, pads)
    groups = map_axes(x.groups, fh, fw)
    y = Spatial(4, 1, 2, 3, x.channels, tuple(groups), x.global_context)
    return [y] * len(node.output)
