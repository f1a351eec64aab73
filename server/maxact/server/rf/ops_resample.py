"""Ops that re-index spatial axes: Pad, Resize/Upsample, Slice, Split, Depth/SpaceToDepth."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import onnx

from maxact.server.rf.axis import AxisField, gather_axis, propagate
from maxact.server.rf.context import Context, attr, slice_params
from maxact.server.rf.state import (
    Group,
    Spatial,
    State,
    Unsupported,
    map_axes,
    on_image,
    slice_groups,
)

AxisOp = Callable[[AxisField], AxisField]


def _identity(a: AxisField) -> AxisField:
    return a


def _gather(
    index: np.ndarray, scale: Fraction, low: Fraction, high: Fraction, exact: bool
) -> AxisOp:
    """The axis op that reads input positions `index` (see gather_axis)."""
    return lambda field: gather_axis(field, index, scale, low, high, exact)


def _per_axis(x: Spatial, ops: dict[int, AxisOp], channels: int | None = None) -> Spatial:
    """Apply ops keyed by tensor axis to the spatial axes of x."""
    fh, fw = ops.get(x.h_axis, _identity), ops.get(x.w_axis, _identity)
    groups = map_axes(x.groups, fh, fw)
    return x.with_groups(groups, channels=x.channels if channels is None else channels)


# ---- Pad ----------------------------------------------------------------------------------


def _pad_index(n_out: int, n: int, begin: int, mode: str) -> np.ndarray:
    idx = np.arange(n_out, dtype=np.int64) - begin
    if mode == "reflect":
        period = max(2 * (n - 1), 1)
        idx = np.mod(idx, period)
        return np.where(idx >= n, period - idx, idx)
    if mode == "edge":
        return np.clip(idx, 0, n - 1)
    if mode == "wrap":
        return np.mod(idx, n)
    return np.where((idx >= 0) & (idx < n), idx, -1)


@on_image
def pad(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Pad: constant padding reaches no pixel; reflect/edge/wrap padding reads real pixels."""
    mode = attr(node, "mode", "constant")
    pads = attr(node, "pads") if ctx.opset < 11 else ctx.value(node, 1)
    if pads is None:
        raise Unsupported("Pad without pads")
    pads = [int(p) for p in np.asarray(pads).tolist()]
    rank = len(pads) // 2
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        axes = [int(a) % x.rank for a in ctx.required(node, 3).tolist()]
    begin = dict.fromkeys(range(x.rank), 0)
    for k, a in enumerate(axes):
        begin[a] = pads[k]
        if a not in (x.h_axis, x.w_axis, 0) and (pads[k] or pads[k + rank]):
            raise Unsupported("Pad on the channel axis")
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    ops = {}
    for a in (x.h_axis, x.w_axis):
        index = _pad_index(out_shape[a], in_shape[a], begin[a], mode)
        ops[a] = _gather(index, Fraction(1), Fraction(-begin[a]), Fraction(0), True)
    return [_per_axis(x, ops)]


# ---- Resize / Upsample --------------------------------------------------------------------


def _coord(mode: str, n_in: int, n_out: int, scale: Fraction) -> tuple[Fraction, Fraction]:
    """x_in = alpha * i + beta for output index i (onnxruntime's coordinate transforms)."""
    if mode == "align_corners":
        return (Fraction(n_in - 1, n_out - 1), Fraction(0)) if n_out > 1 else (Fraction(0),) * 2
    if mode == "asymmetric":
        return 1 / scale, Fraction(0)
    if mode == "tf_half_pixel_for_nn":
        return 1 / scale, 1 / (2 * scale)
    if mode == "pytorch_half_pixel" and n_out <= 1:
        return Fraction(0), Fraction(0)
    if mode in ("half_pixel", "pytorch_half_pixel"):
        return 1 / scale, 1 / (2 * scale) - Fraction(1, 2)
    if mode == "half_pixel_symmetric":
        adjustment = n_out / (scale * n_in)
        offset = Fraction(n_in, 2) * (1 - adjustment)
        return 1 / scale, offset + 1 / (2 * scale) - Fraction(1, 2)
    raise Unsupported(f"coordinate_transformation_mode {mode!r}")


def _round(x: Fraction, mode: str, downsample: bool) -> int:
    if mode == "floor":
        return math.floor(x)
    if mode == "ceil":
        return math.ceil(x)
    if mode == "simple":  # Upsample / Resize-10: floor (truncation) up, ceil down
        return math.ceil(x) if downsample else math.floor(x)
    if x - math.floor(x) == Fraction(1, 2):
        return math.floor(x) if mode == "round_prefer_floor" else math.ceil(x)
    return math.floor(x + Fraction(1, 2))


def resize_axis(
    n_in: int, n_out: int, scale: Fraction, mode: str, coord: str, nearest: str
) -> Callable[[AxisField], AxisField]:
    """Taps of one resized axis, with the envelope `[alpha*i + b, alpha*i + b + w]`."""
    alpha, beta = _coord(coord, n_in, n_out, scale)
    xs = [alpha * i + beta for i in range(n_out)]
    integer = alpha.denominator == 1 and beta.denominator == 1  # every tap is a whole index
    if mode == "nearest":
        down = scale < 1
        taps = np.array([[min(max(_round(x, nearest, down), 0), n_in - 1)] for x in xs])
        valid = np.ones_like(taps, dtype=bool)
        if integer:
            b, w, exact = beta, Fraction(0), True
        else:
            b, w, exact = _round_envelope(beta, nearest, down)
    elif mode in ("linear", "bilinear", "cubic"):
        reach = 2 if mode == "cubic" else 1
        rows = []
        for x in xs:
            xc = min(max(x, Fraction(0)), Fraction(n_in - 1)) if mode != "cubic" else x
            f = math.floor(xc)
            js = [f] if xc == f else list(range(f - reach + 1, f + reach + 1))
            rows.append([min(max(j, 0), n_in - 1) for j in js] + [-1] * (2 * reach - len(js)))
        taps = np.array(rows, dtype=np.int64)
        valid = taps >= 0
        if integer:
            b, w, exact = beta, Fraction(0), True
        elif alpha.denominator == 1 and mode != "cubic":
            b, w, exact = Fraction(math.floor(beta)), Fraction(1), True
        else:
            b, w, exact = beta - reach, Fraction(2 * reach), False
    else:
        raise Unsupported(f"Resize mode {mode!r}")

    def op(src: AxisField) -> AxisField:
        return propagate(src, taps, valid, alpha, b, w, exact)

    return op


def _round_envelope(beta: Fraction, nearest: str, down: bool) -> tuple[Fraction, Fraction, bool]:
    """Continuous interval holding the rounded source index: [x + b - beta, x + b - beta + 1]."""
    if nearest == "floor" or (nearest == "simple" and not down):
        return beta - 1, Fraction(1), False
    if nearest == "ceil" or nearest == "simple":
        return beta, Fraction(1), False
    return beta - Fraction(1, 2), Fraction(1), False


@on_image
def resize(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Resize / Upsample on the spatial axes (batch and channels must keep their size)."""
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    for a in range(x.rank):
        if a not in (x.h_axis, x.w_axis) and in_shape[a] != out_shape[a]:
            raise Unsupported("Resize changes a non-spatial axis")
    legacy = node.op_type == "Upsample" or ctx.opset < 11
    scales: list[float] | np.ndarray | None = None
    if node.op_type == "Upsample" and attr(node, "scales") is not None:
        scales = list(attr(node, "scales"))
    elif legacy:
        scales = ctx.value(node, 1)
    elif len(node.input) > 2 and node.input[2]:
        scales = ctx.value(node, 2)
    sizes_given = len(node.input) > 3 and bool(node.input[3])
    axes_attr = attr(node, "axes")
    if attr(node, "antialias", 0) and any(o < i for i, o in zip(in_shape, out_shape, strict=True)):
        raise Unsupported("antialiased downsampling")
    mode = attr(node, "mode", "nearest")
    coord = "asymmetric" if legacy else attr(node, "coordinate_transformation_mode", "half_pixel")
    nearest = "simple" if legacy else attr(node, "nearest_mode", "round_prefer_floor")
    ops = {}
    for a in (x.h_axis, x.w_axis):
        if scales is not None and not sizes_given:
            k = a if axes_attr is None else list(axes_attr).index(a)
            scale = Fraction(float(np.float32(np.asarray(scales).tolist()[k])))
        else:
            scale = Fraction(out_shape[a], in_shape[a])
        ops[a] = resize_axis(in_shape[a], out_shape[a], scale, mode, coord, nearest)
    return [_per_axis(x, ops)]


# ---- Slice / Split ------------------------------------------------------------------------


def _slice_axis(start: int, step: int, n_out: int) -> AxisOp:
    index = start + step * np.arange(n_out, dtype=np.int64)
    return lambda f: gather_axis(f, index, Fraction(step), Fraction(start), Fraction(0), True)


def _norm_start(start: int, step: int, n: int) -> int:
    if start < 0:
        start += n
    return min(max(start, 0), n if step > 0 else n - 1)


def _cut(x: Spatial, axis: int, start: int, step: int, n_out: int) -> Spatial:
    """Restrict one axis of x to start, start+step, ... (n_out units)."""
    if axis == 0:
        return x
    if axis == x.c_axis:
        if step != 1 and len(x.groups) > 1:
            raise Unsupported("strided channel slice of a tensor with channel groups")
        last = start + step * (n_out - 1)
        lo, hi = min(start, last), max(start, last)
        if step != 1:
            g = x.union()
            return x.with_groups([Group(0, n_out - 1, g.h, g.w)], channels=n_out)
        return x.with_groups(slice_groups(x.groups, lo, hi), channels=n_out)
    if axis in (x.h_axis, x.w_axis):
        return _per_axis(x, {axis: _slice_axis(start, step, n_out)})
    raise Unsupported(f"slice on axis {axis}")


@on_image
def slice_op(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Slice: crops (and strides) spatial axes or selects channel ranges."""
    starts, axes, steps = slice_params(ctx, node, x.rank)
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    for a, s, st in zip(axes, starts, steps, strict=True):
        x = _cut(x, a, _norm_start(int(s), st, in_shape[a]), st, out_shape[a])
    return [x]


@on_image
def split(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Split: each output is a contiguous slice of one axis."""
    axis = int(attr(node, "axis", 0)) % x.rank
    out: list[State] = []
    start = 0
    for name in node.output:
        n = ctx.shape(name)[axis]
        out.append(_cut(x, axis, start, 1, n))
        start += n
    return out


# ---- DepthToSpace / SpaceToDepth ----------------------------------------------------------


@on_image
def depth_to_space(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Output row y reads input row y // b (of one channel chosen by y % b: groups merged)."""
    b = int(attr(node, "blocksize"))
    out_shape = ctx.shape(node.output[0])
    g = x.union()
    ops = {}
    for a in (x.h_axis, x.w_axis):
        index = np.arange(out_shape[a], dtype=np.int64) // b
        ops[a] = _gather(index, Fraction(1, b), Fraction(1 - b, b), Fraction(b - 1, b), b == 1)
    single = x.with_groups([Group(0, x.channels - 1, g.h, g.w)])
    return [_per_axis(single, ops, channels=out_shape[x.c_axis])]


@on_image
def space_to_depth(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Output channel block (by, bx) reads input rows y*b + by and columns x*b + bx."""
    b = int(attr(node, "blocksize"))
    out_shape = ctx.shape(node.output[0])
    groups: list[Group] = []
    for by in range(b):
        for bx in range(b):
            ops = {
                x.h_axis: _slice_axis(by, b, out_shape[x.h_axis]),
                x.w_axis: _slice_axis(bx, b, out_shape[x.w_axis]),
            }
            part = _per_axis(x, ops)
            offset = (by * b + bx) * x.channels
            groups += [Group(g.first + offset, g.last + offset, g.h, g.w) for g in part.groups]
    return [x.with_groups(groups, channels=out_shape[x.c_axis])]
