"""Sliding-window ops: Conv, ConvTranspose, MaxPool / AveragePool / LpPool."""

from __future__ import annotations

import math

import onnx

from .axis import AxisField, transposed_window_axis, window_axis
from .context import Context, attr
from .state import FLAT, Const, Flat, Group, Spatial, State, Unsupported, groups_in, union_groups


def _nchw(x: Spatial, op: str) -> None:
    if (x.rank, x.c_axis, x.h_axis, x.w_axis) != (4, 1, 2, 3):
        raise Unsupported(f"{op} needs a 2-D NCHW input")


def _same_total(n: int, n_out: int, k: int, s: int, d: int) -> int:
    return max((n_out - 1) * s + (k - 1) * d + 1 - n, 0)


def window_pads(
    node: onnx.NodeProto,
    sizes: tuple[int, int],
    outs: tuple[int, int],
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


def _geometry(node: onnx.NodeProto, kernel: list[int]) -> tuple[list[int], list[int]]:
    strides = list(attr(node, "strides", [1, 1]))
    dils = list(attr(node, "dilations", [1, 1]))
    if len(kernel) != 2:
        raise Unsupported(f"{node.op_type} with a {len(kernel)}-D kernel")
    return strides, dils


def conv(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Conv: each output channel block reads its input block through one window per axis."""
    x = ins[0]
    if any(not isinstance(s, Const) for s in ins[1:]):
        raise Unsupported("Conv weights depend on the image")
    if isinstance(x, Flat):
        return [FLAT]
    assert isinstance(x, Spatial)
    _nchw(x, "Conv")
    wshape = ctx.shape(node.input[1])
    kernel = list(attr(node, "kernel_shape", wshape[2:]))
    strides, dils = _geometry(node, kernel)
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    pads = window_pads(node, in_shape[2:], out_shape[2:], kernel, strides, dils)

    def fh(a: AxisField) -> AxisField:
        return window_axis(a, out_shape[2], kernel[0], strides[0], dils[0], pads[0])

    def fw(a: AxisField) -> AxisField:
        return window_axis(a, out_shape[3], kernel[1], strides[1], dils[1], pads[1])

    groups = _blocks(x, int(attr(node, "group", 1)), in_shape[1], out_shape[1], fh, fw)
    return [Spatial(4, 1, 2, 3, out_shape[1], tuple(groups), x.global_context)]


def _blocks(x: Spatial, group: int, cin: int, cout: int, fh, fw) -> list[Group]:
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
        first = b * cout_g
        if out and out[-1].h is h and out[-1].w is w:
            out[-1] = Group(out[-1].first, first + cout_g - 1, h, w)
        else:
            out.append(Group(first, first + cout_g - 1, h, w))
    return out


def pool(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Max/Average/Lp pooling: a per-channel window (ceil_mode shows in the output size)."""
    x = ins[0]
    if isinstance(x, Flat):
        return [FLAT] * len(node.output)
    assert isinstance(x, Spatial)
    _nchw(x, node.op_type)
    kernel = list(attr(node, "kernel_shape"))
    strides, dils = _geometry(node, kernel)
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    pads = window_pads(node, in_shape[2:], out_shape[2:], kernel, strides, dils)
    cache: dict[tuple[int, int], AxisField] = {}

    def once(a: AxisField, k: int) -> AxisField:
        key = (id(a), k)
        if key not in cache:
            cache[key] = window_axis(a, out_shape[2 + k], kernel[k], strides[k], dils[k], pads[k])
        return cache[key]

    groups = [Group(g.first, g.last, once(g.h, 0), once(g.w, 1)) for g in x.groups]
    y = Spatial(4, 1, 2, 3, x.channels, tuple(groups), x.global_context)
    return [y] * len(node.output)


def conv_transpose(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """ConvTranspose: the stride becomes 1/s; pads from attributes or output_shape/auto_pad."""
    x = ins[0]
    if any(not isinstance(s, Const) for s in ins[1:]):
        raise Unsupported("ConvTranspose weights depend on the image")
    if isinstance(x, Flat):
        return [FLAT]
    assert isinstance(x, Spatial)
    _nchw(x, "ConvTranspose")
    wshape = ctx.shape(node.input[1])
    kernel = list(attr(node, "kernel_shape", wshape[2:]))
    strides, dils = _geometry(node, kernel)
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    mode = attr(node, "auto_pad", "NOTSET")
    if attr(node, "output_shape") is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
        opad = list(attr(node, "output_padding", [0, 0]))
        pads = []
        for k in range(2):
            total = (
                strides[k] * (in_shape[2 + k] - 1)
                + opad[k]
                + (kernel[k] - 1) * dils[k]
                + 1
                - out_shape[2 + k]
            )
            pads.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
    elif mode == "VALID":
        pads = [0, 0]
    else:
        pads = list(attr(node, "pads", [0, 0, 0, 0]))[:2]

    def fh(a: AxisField) -> AxisField:
        return transposed_window_axis(a, out_shape[2], kernel[0], strides[0], dils[0], pads[0])

    def fw(a: AxisField) -> AxisField:
        return transposed_window_axis(a, out_shape[3], kernel[1], strides[1], dils[1], pads[1])

    groups = _blocks(x, int(attr(node, "group", 1)), in_shape[1], out_shape[1], fh, fw)
    return [Spatial(4, 1, 2, 3, out_shape[1], tuple(groups), x.global_context)]
