"""Ops that combine or re-arrange tensors without a spatial window.

Elementwise ops take the union of their inputs' fields; inputs broadcast over space (a
squeeze-excitation gate, a flat tensor) only add `global_context`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import onnx

from maxact.server.rf.axis import AxisField, union_axes
from maxact.server.rf.context import Context, attr, reduce_axes
from maxact.server.rf.ops_tokens import kept_axis, merge_grid
from maxact.server.rf.state import (
    FLAT,
    Const,
    Failed,
    Flat,
    Group,
    Spatial,
    State,
    Unsupported,
    check_aligned,
    groups_in,
    on_image,
    union_groups,
)


def _live(node: onnx.NodeProto, ins: list[State]) -> list[tuple[str, Spatial | Flat]]:
    return [(n, s) for n, s in zip(node.input, ins, strict=False) if isinstance(s, Spatial | Flat)]


def _same_layout(xs: list[Spatial]) -> Spatial:
    first = xs[0]
    for x in xs[1:]:
        if (x.rank, x.h_axis, x.w_axis, x.c_axis) != (
            first.rank,
            first.h_axis,
            first.w_axis,
            first.c_axis,
        ):
            raise Unsupported("inputs with different layouts meet")
    return first


def _refined_union(xs: list[Spatial], channels: int) -> list[Group]:
    """Union per channel, over inputs whose groups may be cut at different channels."""
    cuts = {0, channels}
    for x in xs:
        if x.channels == channels:
            cuts |= {g.first for g in x.groups} | {g.last + 1 for g in x.groups}
    bounds = sorted(c for c in cuts if 0 <= c <= channels)
    cache: dict[tuple[int, ...], tuple[AxisField, AxisField]] = {}
    out: list[Group] = []
    for a, b in itertools.pairwise(bounds):
        parts = []
        for x in xs:
            parts += groups_in(x.groups, a, b - 1) if x.channels == channels else list(x.groups)
        key = tuple(sorted({id(p.h) for p in parts} | {-id(p.w) for p in parts}))
        if key not in cache:
            check_aligned([p.h for p in parts], "height")
            check_aligned([p.w for p in parts], "width")
            hs = list({id(p.h): p.h for p in parts}.values())
            ws = list({id(p.w): p.w for p in parts}.values())
            cache[key] = (union_axes(hs), union_axes(ws))
        out.append(Group(a, b - 1, *cache[key]))
    return out  # the caller's with_groups merges neighbours that share fields


def elementwise(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Broadcasting elementwise op (also unary activations and normalisations)."""
    live = _live(node, ins)
    out_shape = ctx.shape(node.output[0])
    local: list[Spatial] = []
    glob = False
    for name, s in live:
        if isinstance(s, Flat):
            glob = True
            continue
        in_shape = ctx.shape(name)
        if len(in_shape) != len(out_shape) or s.rank != len(out_shape):
            raise Unsupported("broadcast changes the rank of a spatial tensor")
        hw_in = (in_shape[s.h_axis], in_shape[s.w_axis])
        hw_out = (out_shape[s.h_axis], out_shape[s.w_axis])
        if hw_in == hw_out:
            local.append(s)
        elif hw_in == (1, 1):
            glob = True
        else:
            raise Unsupported(f"broadcast along one spatial axis {hw_in} -> {hw_out}")
    if not local:
        return [FLAT] * len(node.output)
    first = _same_layout(local)
    channels = out_shape[first.c_axis]
    if len(local) == 1 and first.channels == channels:
        groups = list(first.groups)
    else:
        groups = _refined_union(local, channels)
    ctx_flag = glob or any(x.global_context for x in local) or node.op_type in _GLOBAL_STATS
    y = first.with_groups(groups, channels=channels, global_context=ctx_flag)
    return [y] * len(node.output)


# Normalisations whose statistics are taken over space: the local field stays, plus context.
_GLOBAL_STATS = {"InstanceNormalization", "MeanVarianceNormalization", "GroupNormalization"}


def concat(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Concat: channel groups are stacked; on a spatial axis the unit intervals are stacked."""
    live = _live(node, ins)
    if all(isinstance(s, Flat) for _, s in live):
        return [FLAT]
    if len(live) != len([i for i in node.input if i]):
        raise Unsupported("Concat of image features with constants or global tensors")
    xs = [s for _, s in live if isinstance(s, Spatial)]
    assert len(xs) == len(live), "not all Flat, and no constants: every input is Spatial"
    first = _same_layout(xs)
    axis = int(attr(node, "axis")) % first.rank
    ctx_flag = any(x.global_context for x in xs)
    if axis == first.c_axis:
        groups, offset = [], 0
        for x in xs:
            groups += [Group(g.first + offset, g.last + offset, g.h, g.w) for g in x.groups]
            offset += x.channels
        return [first.with_groups(groups, channels=offset, global_context=ctx_flag)]
    if axis in (first.h_axis, first.w_axis):
        return [_concat_spatial(xs, axis == first.h_axis, ctx_flag)]
    raise Unsupported(f"Concat on axis {axis}")


def _concat_spatial(xs: list[Spatial], on_h: bool, ctx_flag: bool) -> Spatial:
    """Stack units along one spatial axis (R/S/P of the first part, marked not exact)."""
    us = [x.union() for x in xs]
    along = [u.h if on_h else u.w for u in us]
    across = [u.w if on_h else u.h for u in us]
    if any(
        not (np.array_equal(a.lo, across[0].lo) and np.array_equal(a.hi, across[0].hi))
        for a in across
    ):
        raise Unsupported("Concat on a spatial axis of parts with different fields across it")
    geom = dataclasses.replace(along[0].geom, exact=False)
    stacked = AxisField(
        np.concatenate([a.lo for a in along]), np.concatenate([a.hi for a in along]), geom
    )
    other = union_axes(across)
    h, w = (stacked, other) if on_h else (other, stacked)
    return xs[0].with_groups([Group(0, xs[0].channels - 1, h, w)], global_context=ctx_flag)


@on_image
def transpose(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Transpose: the field follows the axes (NHWC models transpose the input first)."""
    perm = list(attr(node, "perm", list(range(x.rank))[::-1]))
    if perm[0] != 0:
        raise Unsupported("Transpose moves the batch axis")
    return [
        Spatial(
            x.rank,
            perm.index(x.c_axis),
            perm.index(x.h_axis),
            perm.index(x.w_axis),
            x.channels,
            x.groups,
            x.global_context,
        )
    ]


@on_image
def reshape(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Reshape/Flatten/Squeeze/Unsqueeze: local while both spatial axes survive, else flat."""
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    h = kept_axis(in_shape, out_shape, x.h_axis)
    w = kept_axis(in_shape, out_shape, x.w_axis)
    if h is None or w is None or math.prod(in_shape[: x.h_axis]) != math.prod(out_shape[:h]):
        return [merge_grid(in_shape, out_shape, x) or FLAT]
    if min(h, w) == 0:
        return [FLAT]
    rest = [j for j in range(1, len(out_shape)) if j not in (h, w)]
    c_axis = next((j for j in rest if out_shape[j] > 1), rest[0] if rest else -1)
    if c_axis < 0:
        raise Unsupported("Reshape drops the channel axis")
    channels = math.prod(out_shape[j] for j in rest)
    if out_shape[c_axis] == x.channels and channels == x.channels:
        groups = list(x.groups)
    else:  # channels re-arranged (e.g. a channel shuffle): one group, the union
        g = x.union()
        groups = [Group(0, channels - 1, g.h, g.w)]
    return [Spatial(len(out_shape), c_axis, h, w, channels, tuple(groups), x.global_context)]


@on_image
def reduce(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Reduce*/ArgMax: over space -> flat (global); over channels -> one union group."""
    axes = reduce_axes(ctx, node, x.rank)
    if axes is None:
        if attr(node, "noop_with_empty_axes", 0):
            return [x]
        return [FLAT]
    if x.h_axis in axes and x.w_axis in axes:
        return [FLAT]
    if x.h_axis in axes or x.w_axis in axes:
        raise Unsupported("reduction over one spatial axis only")
    if axes - {x.c_axis}:
        raise Unsupported(f"reduction over axes {sorted(axes)}")
    if not attr(node, "keepdims", 1):
        raise Unsupported("channel reduction without keepdims")
    g = x.union()
    return [x.with_groups([Group(0, 0, g.h, g.w)], channels=1)]


@on_image
def softmax(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """Softmax over channels mixes channels; over space it adds global context."""
    default = -1 if ctx.opset >= 13 else 1
    axis = int(attr(node, "axis", default)) % x.rank
    axes = {axis} if ctx.opset >= 13 else set(range(axis, x.rank))
    spatial = bool(axes & {x.h_axis, x.w_axis})
    if x.c_axis in axes:
        g = x.union()
        x = x.with_groups([Group(0, x.channels - 1, g.h, g.w)])
    return [x.with_groups(x.groups, global_context=x.global_context or spatial)]


def matmul(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """MatMul over the channel axis (NHWC pointwise) stays local; anything else is global."""
    a, b = ins[0], ins[1]
    if isinstance(a, Spatial) and isinstance(b, Const) and a.c_axis == a.rank - 1:
        out_shape = ctx.shape(node.output[0])
        g = a.union()
        return [a.with_groups([Group(0, out_shape[-1] - 1, g.h, g.w)], channels=out_shape[-1])]
    return [FLAT]


@on_image
def lrn(ctx: Context, node: onnx.NodeProto, x: Spatial) -> list[State]:
    """LRN: channel c reads channels c - (n-1)//2 .. c + ceil((n-1)/2) at the same unit."""
    if len(x.groups) == 1:
        return [x]
    n = int(attr(node, "size"))
    below, above = (n - 1) // 2, math.ceil((n - 1) / 2)
    runs: list[tuple[int, int, tuple[int, ...]]] = []
    for c in range(x.channels):
        touched = tuple(
            k for k, g in enumerate(x.groups) if g.first <= c + above and g.last >= c - below
        )
        if runs and runs[-1][2] == touched:
            runs[-1] = (runs[-1][0], c, touched)
        else:
            runs.append((c, c, touched))
    cache: dict[tuple[int, ...], Group] = {}
    groups = []
    for first, last, touched in runs:
        if touched not in cache:
            cache[touched] = union_groups([x.groups[k] for k in touched], 0, 0)
        u = cache[touched]
        groups.append(Group(first, last, u.h, u.w))
    return [x.with_groups(groups)]


def constant_of_image(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Shape, Size, *Like: depend on the image's shape only, never on its pixels."""
    return [Const()] * len(node.output)


def passthrough_failed(ins: list[State]) -> Failed | None:
    """The first failed input, whose failure every dependent tensor inherits."""
    return next((s for s in ins if isinstance(s, Failed)), None)
