"""Token sequences that came from a spatial grid: a vision transformer's patches.

A row-major Reshape that merges H and W turns a spatial tensor into tokens (`merge_grid`);
each token keeps its grid cell's field. Channel-wise ops (LayerNormalization, MatMul with a
constant weight, elementwise ops with constants) keep every token's field; ops that mix tokens
(MatMul of two image-dependent tensors over the token axis, Softmax over tokens, the fused
attention ops) set `global_context`, while each token's field stays its own patch, the local
path. Tokens concatenated in front of the grid (CLS, registers) are the `prefix`; picking them
out gives a flat tensor. The reverse Reshape to [N, C, H, W] returns to the spatial state.
"""

from __future__ import annotations

import math
from dataclasses import replace

import onnx

from maxact.server.rf.axis import union_axes
from maxact.server.rf.context import Context, attr, reduce_axes, slice_params
from maxact.server.rf.state import (
    FLAT,
    Const,
    Flat,
    Group,
    Handler,
    Spatial,
    State,
    Tokens,
    Unsupported,
    check_aligned,
)


def _channels(shape: tuple[int, ...], axis: int, batch: int = 0) -> int:
    """Channels of a token tensor: the product of its non-batch, non-token dims."""
    return math.prod(shape) // max(shape[axis] * shape[batch], 1)


def _like(ctx: Context, name: str, x: Tokens, axis: int, glob: bool) -> Tokens:
    """`x` as the output `name` whose token axis is `axis`."""
    shape = ctx.shape(name)
    if not 0 <= axis < len(shape) or axis == x.batch or shape[axis] != x.length:
        raise Unsupported(f"output {name!r} does not keep the token axis")
    return replace(
        x,
        rank=len(shape),
        axis=axis,
        channels=_channels(shape, axis, x.batch),
        global_context=glob or x.global_context,
    )


def _union(xs: list[Tokens]) -> Tokens:
    """One token state whose fields are the hull of `xs` (same grid and prefix)."""
    first = xs[0]
    for x in xs[1:]:
        if (x.grid, x.prefix) != (first.grid, first.prefix):
            raise Unsupported(
                f"token sequences with different grids meet ({first.grid} + {first.prefix} "
                f"prefix, {x.grid} + {x.prefix} prefix)"
            )
    if len(xs) == 1:
        return first
    check_aligned([x.h for x in xs], "height")
    check_aligned([x.w for x in xs], "width")
    return replace(
        first,
        h=union_axes(list({id(x.h): x.h for x in xs}.values())),
        w=union_axes(list({id(x.w): x.w for x in xs}.values())),
        global_context=any(x.global_context for x in xs),
    )


def merge_grid(in_shape: tuple[int, ...], out_shape: tuple[int, ...], x: Spatial) -> State | None:
    """The token state when a Reshape merges H and W (row-major) into one axis, else None."""
    if x.w_axis != x.h_axis + 1 or not out_shape or out_shape[0] != in_shape[0]:
        return None
    before = math.prod(in_shape[: x.h_axis])
    cells = in_shape[x.h_axis] * in_shape[x.w_axis]
    for t in range(1, len(out_shape)):
        if out_shape[t] == cells and math.prod(out_shape[:t]) == before:
            if _channels(out_shape, t) != x.channels:
                return None
            g = x.union()
            return Tokens(len(out_shape), t, x.channels, 0, g.h, g.w, x.global_context)
    return None


def _split_grid(in_shape: tuple[int, ...], out_shape: tuple[int, ...], x: Tokens) -> Spatial | None:
    """The spatial state when a Reshape splits the token axis back into (H, W), else None."""
    height, width = x.grid
    if x.prefix or len(out_shape) != 4 or out_shape[0] != in_shape[0]:
        return None
    before = math.prod(in_shape[: x.axis])
    for j in range(1, 3):
        if out_shape[j : j + 2] == (height, width) and math.prod(out_shape[:j]) == before:
            c_axis = 3 if j == 1 else 1
            group = Group(0, out_shape[c_axis] - 1, x.h, x.w)
            return Spatial(4, c_axis, j, j + 1, out_shape[c_axis], (group,), x.global_context)
    return None


def kept_axis(in_shape: tuple[int, ...], out_shape: tuple[int, ...], axis: int) -> int | None:
    """Output axis that is input `axis` unchanged by a row-major reshape, else None."""
    before = math.prod(in_shape[:axis])
    for j, size in enumerate(out_shape):
        if size == in_shape[axis] and math.prod(out_shape[:j]) == before:
            return j
    return None


def _tokens_in(ins: list[State], moved_batch: bool = False) -> list[Tokens]:
    """The token inputs; `moved_batch`: the op may take tokens whose batch axis is not first
    (it re-indexes axes only: Transpose, Slice, Squeeze...)."""
    if any(isinstance(s, Spatial) for s in ins):
        raise Unsupported("a spatial [N, C, H, W] tensor meets a token sequence")
    xs = [s for s in ins if isinstance(s, Tokens)]
    if not moved_batch and any(x.batch != 0 for x in xs):
        raise Unsupported("a token sequence whose batch axis is not first")
    return xs


def elementwise(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Broadcasting elementwise ops and channel-wise normalisations keep each token's field."""
    xs = _tokens_in(ins)
    out = ctx.shape(node.output[0])
    axes = set()
    for name, s in zip(node.input, ins, strict=False):
        if isinstance(s, Tokens):
            shape = ctx.shape(name)
            axes.add(s.axis + len(out) - len(shape))
    if len(axes) != 1:
        raise Unsupported("token sequences meet with their token axes in different places")
    axis = axes.pop()
    glob = any(isinstance(s, Flat) for s in ins) or node.op_type in _STATS_OVER_INPUT
    x = _union(xs)
    return [_like(ctx, name, x, axis, glob) for name in node.output if name]


def layer_norm(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """LayerNormalization (and its relatives): statistics over the axes from `axis` on;
    over the channels it keeps each token's field, over the tokens it adds global context."""
    first = ins[0]
    if not isinstance(first, Tokens):
        raise Unsupported(f"{node.op_type} whose data input is not the token sequence")
    x = _union(_tokens_in(ins))
    axis = int(attr(node, "axis", -1)) % x.rank
    glob = axis <= x.axis or any(isinstance(s, Flat) for s in ins)
    outs: list[State] = []
    for k, name in enumerate(node.output):
        if k and ctx.shapes.get(name, ())[x.axis : x.axis + 1] != (x.length,):
            outs.append(FLAT)
        else:
            outs.append(_like(ctx, name, x, x.axis, glob) if name else FLAT)
    return outs


def reduce(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Reductions over channels keep each token's field; over the tokens they are global."""
    (x,) = _tokens_in(ins[:1])
    axes = reduce_axes(ctx, node, x.rank)
    if axes is None:
        return [x] if attr(node, "noop_with_empty_axes", 0) else [FLAT]
    if x.axis in axes or 0 in axes:
        return [FLAT]
    keep = node.op_type in ("ArgMax", "ArgMin") or attr(node, "keepdims", 1)
    axis = x.axis if keep else x.axis - sum(1 for a in axes if a < x.axis)
    return [_like(ctx, node.output[0], x, axis, False)]


def softmax(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Softmax over channels keeps each token's field; over the tokens it is attention."""
    (x,) = _tokens_in(ins[:1])
    default = -1 if ctx.opset >= 13 else 1
    axis = int(attr(node, "axis", default)) % x.rank
    axes = {axis} if ctx.opset >= 13 else set(range(axis, x.rank))
    return [_like(ctx, node.output[0], x, x.axis, x.axis in axes)]


def matmul(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """MatMul: a constant weight over the channels keeps each token's field; a product of two
    image-dependent tensors (attention scores, scores x values) mixes tokens: global."""
    a, b = ins[0], ins[1]
    _tokens_in([a, b])
    rank = len(ctx.shape(node.output[0]))
    ra, rb = len(ctx.shape(node.input[0])), len(ctx.shape(node.input[1]))
    image_b = not isinstance(b, Const)
    if isinstance(a, Tokens) and a.axis != ra - 1:  # tokens are A's rows
        x = _union([a, b]) if isinstance(b, Tokens) else a
        return [_like(ctx, node.output[0], x, a.axis + rank - ra, image_b)]
    if isinstance(b, Tokens) and b.axis == rb - 1:  # tokens are B's columns
        x = _union([a, b]) if isinstance(a, Tokens) else b
        return [_like(ctx, node.output[0], x, rank - 1, not isinstance(a, Const))]
    return [FLAT]  # the token axis is contracted (with constant weights): a global path


def transpose(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Transpose: the token axis moves; channels are renumbered but share one field."""
    (x,) = _tokens_in(ins[:1], moved_batch=True)
    perm = list(attr(node, "perm", list(range(x.rank))[::-1]))
    return [replace(x, axis=perm.index(x.axis), batch=perm.index(x.batch))]


def squeeze(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Squeeze/Unsqueeze: the token and batch axes move by the axes removed or inserted."""
    (x,) = _tokens_in(ins[:1], moved_batch=True)
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = ctx.required(node, 1).tolist()
    if axes is None:
        return reshape(ctx, node, ins)
    out_rank = len(ctx.shape(node.output[0]))
    if node.op_type == "Squeeze":
        gone = {int(a) % x.rank for a in axes}
        if x.axis in gone or x.batch in gone:
            return [FLAT]

        def moved(a: int) -> int:
            return a - sum(1 for g in gone if g < a)
    else:
        added = sorted(int(a) % out_rank for a in axes)

        def moved(a: int) -> int:
            for g in added:
                if g <= a:
                    a += 1
            return a

    y = replace(x, batch=moved(x.batch))
    return [_like(ctx, node.output[0], y, moved(x.axis), False)]


def reshape(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Reshape/Flatten/Squeeze/Unsqueeze: the token axis survives (heads split or merged),
    splits back into the grid (hybrids), or is merged away (flat)."""
    (x,) = _tokens_in(ins[:1])
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    spatial = _split_grid(in_shape, out_shape, x)
    if spatial is not None:
        return [spatial]
    t = kept_axis(in_shape, out_shape, x.axis)
    if t is None or t == 0 or out_shape[0] != in_shape[0]:
        return [FLAT]
    return [_like(ctx, node.output[0], x, t, False)]


def gather(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Gather of tokens (the CLS token) is flat; of channels keeps each token's field."""
    (x,) = _tokens_in(ins[:1], moved_batch=True)
    if not isinstance(ins[1], Const):
        raise Unsupported("Gather with image-dependent indices")
    axis = int(attr(node, "axis", 0)) % x.rank
    if axis == x.axis:
        return [FLAT]
    if axis == x.batch:
        raise Unsupported("Gather on the batch axis of a token sequence")
    added = len(ctx.shape(node.input[1])) - 1  # index dims replace the gathered axis

    def moved(a: int) -> int:
        return a + added if axis < a else a

    y = replace(x, batch=moved(x.batch))
    return [_like(ctx, node.output[0], y, moved(x.axis), False)]


def _cut(x: Tokens, start: int, length: int) -> State:
    """Tokens start .. start + length - 1 of `x`: prefix tokens only are flat."""
    if start + length <= x.prefix:
        return FLAT
    if start <= x.prefix and start + length == x.length:
        return replace(x, prefix=x.prefix - start)
    raise Unsupported(f"a slice of tokens {start}..{start + length - 1} cuts the token grid")


def slice_op(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Slice of channels keeps each token's field; of tokens it drops (or keeps) the prefix."""
    (x,) = _tokens_in(ins[:1], moved_batch=True)
    starts, axes, steps = slice_params(ctx, node, x.rank)
    in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    state: State = x
    for axis, start, step in zip(axes, starts, steps, strict=True):
        if axis == x.axis and out_shape[axis] != in_shape[axis]:
            if step != 1:
                raise Unsupported("a strided slice of the token axis")
            begin = start + in_shape[axis] if start < 0 else start
            state = _cut(x, min(max(begin, 0), in_shape[axis]), out_shape[axis])
        elif axis == x.batch and out_shape[axis] != in_shape[axis]:
            raise Unsupported("Slice of the batch axis of a token sequence")
    if isinstance(state, Tokens):
        return [_like(ctx, node.output[0], state, x.axis, False)]
    return [state]


def split(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Split of channels (q, k, v) keeps each token's field; of tokens splits off the prefix."""
    (x,) = _tokens_in(ins[:1], moved_batch=True)
    axis = int(attr(node, "axis", 0)) % x.rank
    outs: list[State] = []
    start = 0
    for name in node.output:
        n = ctx.shape(name)[axis]
        if axis == x.axis:
            part = _cut(x, start, n)
            outs.append(part)
        else:
            outs.append(_like(ctx, name, x, x.axis, False))
        start += n
    return outs


def concat(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Concat in front of the grid (CLS, registers) grows the prefix; of channels, a union."""
    xs = _tokens_in(ins)
    rank = len(ctx.shape(node.output[0]))
    axis = int(attr(node, "axis")) % rank
    if axis == xs[0].axis:
        if len(xs) != 1 or not isinstance(ins[-1], Tokens):
            raise Unsupported("tokens concatenated after the token grid")
        prefix = sum(ctx.shape(name)[axis] for name in node.input[:-1] if name)
        return [replace(xs[0], prefix=xs[0].prefix + prefix)]
    if any(isinstance(s, Flat) for s in ins):
        raise Unsupported("Concat of token channels with a global tensor")
    return [_like(ctx, node.output[0], _union(xs), xs[0].axis, False)]


def attention(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    """Fused attention (Attention, com.microsoft Attention / MultiHeadAttention): each output
    token reads every token; its field stays its own patch, with global context."""
    query = ins[0]
    if not isinstance(query, Tokens):
        raise Unsupported(f"{node.op_type} whose query is not the token sequence")
    xs = _tokens_in(ins)
    x = _union(xs)
    out: list[State] = [_like(ctx, node.output[0], x, query.axis, True)]
    return out + [FLAT] * (len(node.output) - 1)


def _flat(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
    return [FLAT] * len(node.output)


# normalisations whose statistics may span the tokens
_STATS_OVER_INPUT = {"InstanceNormalization", "MeanVarianceNormalization", "GroupNormalization"}
_ELEMENTWISE = {"Gelu", "FastGelu", "BiasGelu", "QuickGelu", "BiasAdd"}
_NORMS = {
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "RMSNormalization",
}


def handlers(elementwise_ops: list[str], reductions: list[str]) -> dict[tuple[str, str], Handler]:
    """The token handlers by (domain, op type); `elementwise_ops` are the engine's."""
    table: dict[tuple[str, str], Handler] = {}
    for domain in ("", "com.microsoft"):
        for op in [*elementwise_ops, *_ELEMENTWISE]:
            table[(domain, op)] = elementwise
        for op in _NORMS:
            table[(domain, op)] = layer_norm
        for op in ("Attention", "MultiHeadAttention"):
            table[(domain, op)] = attention
    for op in reductions:
        table[("", op)] = reduce
    for op in ("Reshape", "Flatten"):
        table[("", op)] = reshape
    for op in ("Squeeze", "Unsqueeze"):
        table[("", op)] = squeeze
    table.update(
        {
            ("", "Softmax"): softmax,
            ("", "LogSoftmax"): softmax,
            ("", "MatMul"): matmul,
            ("", "Transpose"): transpose,
            ("", "Gather"): gather,
            ("", "Slice"): slice_op,
            ("", "Split"): split,
            ("", "Concat"): concat,
            ("", "Gemm"): _flat,
            ("", "GlobalAveragePool"): _flat,
        }
    )
    return table
