"""Reductions inside the graph: the scan session returns [N, C]-sized results, not activation maps.

Copying every full activation map out of onnxruntime (and, on a GPU, across the bus) costs more
than the reduction itself for early layers, so the pruned graph ends in the reductions each
request needs:

- image mode, bottom-k and statistics (all rank each image's per-channel maximum): TopK(1) over
  H*W, the maximum and its index (the lower index on ties = the earliest unit in row-major
  order, like `np.argmax`), so the value is bit-for-bit the map's own element;
- a single-unit query: the unit's value (two Gathers);
- a channel subset: one Gather on the channel axis before anything else.

The channel subset and the unit are graph *inputs* fed at run time (`LayerReduction.feeds`),
not constants: one session serves every channel and unit of a layer set (a session per
channel subset cost ~125 MB each on PP-LCNet and grew the server until it was OOM-killed);
its cache key is `LayerReduction.graph_key`, which leaves the values out.
- flat tensors: returned as they are (already [N, C]).

Position mode keeps the full map: its greedy receptive-field suppression may keep, for one
(image, channel), a unit ranked anywhere in that channel's order (every better unit can overlap
an already kept one), so no fixed-size TopK prefix is exact; the map is only added to the
outputs of scans that ask for position mode, and of layers whose kept entries keep their maps
(`scan.kept_maps`: a stored scan's deep layers, so its mask patches need no second run).

Each "max" layer also returns its per-channel sums over space: NaN exactly when the map holds
a NaN (or inf - inf), where onnxruntime's comparisons disagree with numpy's argmax (which picks
the first NaN); the engine reduces such a batch on the host, so the answers are numpy's in
every case (tested). The engine uses this on GPUs and, on the CPU, for maps up to
`engine.HOST_REDUCE_ABOVE` values per image (larger maps: onnxruntime's CPU TopK/ArgMax cost
more than numpy's argmax in a second thread). `with_uint8_input` lets the same graph take
uint8 pixels and normalise them itself (a quarter of the host-to-device bytes; on the CPU
slower than numpy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from maxact.common.kinds import ChannelOrder, Layout


class SpatialField(Protocol):
    """What the plan needs of a layer's receptive field (`rf.TensorField` has it)."""

    @property
    def spatial(self) -> bool: ...
    @property
    def channels(self) -> int: ...
    @property
    def channel_axis(self) -> int: ...
    @property
    def height_axis(self) -> int: ...
    @property
    def width_axis(self) -> int: ...
    @property
    def tokens(self) -> TokenLayout | None: ...


class TokenLayout(Protocol):
    """Where a token sequence's tokens are (`rf.TokenGrid` has it)."""

    @property
    def rank(self) -> int: ...
    @property
    def axis(self) -> int: ...
    @property
    def prefix(self) -> int: ...


MIN_OPSET = 11  # TopK with largest/sorted; older graphs are reduced on the host
SEPARATOR = "::maxact."


@dataclass(frozen=True)
class LayerReduction:
    """What the graph computes for one layer; hashable, so it is part of a session's cache key."""

    tensor: str
    kind: str  # "max" | "unit" | "flat" | "host" (the tensor itself, reduced on the host)
    rank: int = 4
    axes: tuple[int, int, int] = (1, 2, 3)  # channel, height, width axes of the tensor
    channels: tuple[int, ...] | None = None  # a subset, in the requested order
    total_channels: int = 0
    unit: tuple[int, int] | None = None
    keep_map: bool = False  # the tensor itself is an output too (position mode, kept maps)
    opset: int = 13  # the graph's: ReduceSum takes its axes as an input from 13 on
    # a token sequence: (token axis, prefix tokens); its grid tokens are laid out as
    # [N, C, tokens] before the reduction (`axes` is then unused)
    tokens: tuple[int, int] | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        """The graph outputs this layer adds, in order."""
        named: tuple[str, ...] = ()
        if self.kind == "max":
            named = (self._name("value"), self._name("index"), self._name("sum"))
        elif self.kind == "unit":
            named = (self._name("unit"),)
        return (*named, self.tensor) if self.keep_map or self.kind in ("flat", "host") else named

    def _name(self, what: str) -> str:
        return f"{self.tensor}{SEPARATOR}{what}"

    @property
    def kept(self) -> int:
        return len(self.channels) if self.channels is not None else self.total_channels

    @property
    def graph_key(self) -> tuple[object, ...]:
        """What the reduced graph depends on: not the channel or unit values (fed at run time),
        so every channel subset and unit of a layer shares one session."""
        return (
            self.tensor,
            self.kind,
            self.rank,
            self.axes,
            self.channels is not None,
            self.keep_map,
            self.opset,
            self.tokens,
        )

    def feeds(self) -> dict[str, np.ndarray]:
        """The graph inputs this reduction adds, with this request's values."""
        if self.kind not in ("max", "unit"):
            return {}
        values: dict[str, np.ndarray] = {}
        if self.channels is not None:
            values[self._name("channels")] = np.asarray(self.channels, np.int64)
        if self.kind == "unit":
            assert self.unit is not None
            values[self._name("y")] = np.asarray(self.unit[0], np.int64)
            values[self._name("x")] = np.asarray(self.unit[1], np.int64)
        return values


def plan_reduction(
    tensor: str,
    field: SpatialField | None,
    rank: int,
    channels: tuple[int, ...] | None,
    unit: tuple[int, int] | None,
    keep_map: bool,
    opset: int,
) -> LayerReduction:
    """The in-graph reduction for one layer of a scan (falls back to "host" when the graph
    cannot express it: old opsets, tensors that are not [N, C, H, W] in some order)."""
    if field is None or not field.spatial:
        return LayerReduction(tensor, "flat")
    tokens = field.tokens
    if tokens is not None and unit is None and opset >= MIN_OPSET:
        rank = tokens.rank
    elif opset < MIN_OPSET or rank != 4 or tokens is not None:
        return LayerReduction(tensor, "host")  # a token's unit: `TokenGrid.view` on the host
    axes = (field.channel_axis, field.height_axis, field.width_axis)
    subset = (
        None if channels is None or tuple(channels) == tuple(range(field.channels)) else channels
    )
    return LayerReduction(
        tensor,
        "unit" if unit is not None else "max",
        rank,
        axes,
        None if subset is None else tuple(int(c) for c in subset),
        field.channels,
        unit,
        keep_map=keep_map,
        opset=opset,
        tokens=None if tokens is None else (tokens.axis, tokens.prefix),
    )


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def with_reductions(
    model: onnx.ModelProto, reductions: tuple[LayerReduction, ...]
) -> onnx.ModelProto:
    """A copy of the (pruned) `model` whose outputs are exactly the reductions' outputs."""
    reduced = onnx.ModelProto()
    reduced.CopyFrom(model)
    graph = reduced.graph
    types = {value.name: value for value in [*graph.output, *graph.value_info, *graph.input]}
    nodes: list[onnx.NodeProto] = []
    outputs: list[onnx.ValueInfoProto] = []
    for reduction in reductions:
        nodes.extend(_nodes(reduction, graph))
        for name in reduction.outputs:
            if name == reduction.tensor and name in types:
                info = onnx.ValueInfoProto()
                info.CopyFrom(types[name])
                outputs.append(info)
            elif name.endswith("index"):
                outputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, None))
            else:
                outputs.append(onnx.ValueInfoProto(name=name))
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(outputs)
    for reduction in reductions:
        for name, value in reduction.feeds().items():
            shape = [f"{name}.count"] if value.ndim else []  # any subset size; a scalar unit
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.INT64, shape))
    return reduced


def feeds_of(reductions: tuple[LayerReduction, ...]) -> dict[str, np.ndarray]:
    """Every run-time input of `with_reductions(model, reductions)` (channels, unit)."""
    return {name: value for r in reductions for name, value in r.feeds().items()}


def _constant(graph: onnx.GraphProto, name: str, values: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(values, name))
    return name


def _nodes(reduction: LayerReduction, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    if reduction.kind in ("flat", "host"):
        return []
    prefix = f"{reduction.tensor}{SEPARATOR}"
    nodes: list[onnx.NodeProto] = []
    current = reduction.tensor
    channel_axis = reduction.axes[0]
    if reduction.tokens is not None:
        current = _grid_tokens(reduction, graph, prefix, nodes)
        channel_axis = 1
    if reduction.channels is not None:  # the indices are a graph input (see `feeds`)
        nodes.append(
            helper.make_node(
                "Gather", [current, prefix + "channels"], [prefix + "subset"], axis=channel_axis
            )
        )
        current = prefix + "subset"
    perm = _to_nchw(reduction.rank, reduction.axes) if reduction.tokens is None else ()
    if perm and perm != tuple(range(reduction.rank)):
        nodes.append(helper.make_node("Transpose", [current], [prefix + "nchw"], perm=perm))
        current = prefix + "nchw"
    if reduction.kind == "unit":
        row, col = prefix + "y", prefix + "x"  # graph inputs (see `feeds`)
        nodes.append(helper.make_node("Gather", [current, row], [prefix + "row"], axis=2))
        nodes.append(helper.make_node("Gather", [prefix + "row", col], [prefix + "unit"], axis=2))
        return nodes
    # 0 = "this dimension of the input": N and the channel count (which the fed subset sets)
    flat_shape = _constant(graph, prefix + "flat_shape", np.asarray([0, 0, -1], np.int64))
    out_shape = _constant(graph, prefix + "out_shape", np.asarray([0, 0], np.int64))
    one = _constant(graph, prefix + "one", np.asarray([1], np.int64))
    nodes += [
        helper.make_node("Reshape", [current, flat_shape], [prefix + "flat"]),
        # the maximum and its first index (TopK breaks ties by the lower index: the earliest
        # unit in row-major order, like np.argmax); ArgMax + GatherElements compute the same
        # and took 4% longer on PP-LCNet's early layer
        helper.make_node(
            "TopK",
            [prefix + "flat", one],
            [prefix + "top", prefix + "best"],
            axis=2,
            largest=1,
            sorted=1,
        ),
        helper.make_node("Reshape", [prefix + "top", out_shape], [prefix + "value"]),
        helper.make_node("Reshape", [prefix + "best", out_shape], [prefix + "index"]),
        # NaN wherever the map holds a NaN: onnxruntime's TopK/ArgMax pass over a NaN that is not
        # first, numpy's argmax picks it; such a batch is reduced on the host instead
        _sum_over_space(graph, prefix, reduction.opset),  # [N, C]
    ]
    return nodes


def _grid_tokens(
    reduction: LayerReduction, graph: onnx.GraphProto, prefix: str, nodes: list[onnx.NodeProto]
) -> str:
    """Append the nodes that lay a token sequence's grid tokens out as [N, C, tokens] (prefix
    tokens dropped, channels row-major over the other axes: `rf.TokenGrid.view`'s order);
    returns that tensor's name. Sizes are read at run time: one graph serves every grid."""
    assert reduction.tokens is not None
    axis, skip = reduction.tokens
    current = reduction.tensor
    perm = [0, axis, *(a for a in range(1, reduction.rank) if a != axis)]
    if perm != list(range(reduction.rank)):
        nodes.append(helper.make_node("Transpose", [current], [prefix + "tokens_first"], perm=perm))
        current = prefix + "tokens_first"
    shape = _constant(graph, prefix + "token_shape", np.asarray([0, 0, -1], np.int64))
    start = _constant(graph, prefix + "grid_start", np.asarray([skip], np.int64))
    end = _constant(graph, prefix + "grid_end", np.asarray([np.iinfo(np.int64).max], np.int64))
    token_axis = _constant(graph, prefix + "token_axis", np.asarray([1], np.int64))
    nodes += [
        helper.make_node("Reshape", [current, shape], [prefix + "sequence"]),
        helper.make_node(
            "Slice", [prefix + "sequence", start, end, token_axis], [prefix + "grid_tokens"]
        ),
        helper.make_node(
            "Transpose", [prefix + "grid_tokens"], [prefix + "by_channel"], perm=[0, 2, 1]
        ),
    ]
    return prefix + "by_channel"


def _sum_over_space(graph: onnx.GraphProto, prefix: str, opset: int) -> onnx.NodeProto:
    """ReduceSum over axis 2 of the [N, C, H*W] map (axes an input from opset 13 on)."""
    if opset >= 13:
        axes = _constant(graph, prefix + "space_axis", np.asarray([2], np.int64))
        return helper.make_node("ReduceSum", [prefix + "flat", axes], [prefix + "sum"], keepdims=0)
    return helper.make_node("ReduceSum", [prefix + "flat"], [prefix + "sum"], axes=[2], keepdims=0)


def _to_nchw(rank: int, axes: tuple[int, int, int]) -> tuple[int, ...]:
    """The Transpose perm that moves (channel, height, width) axes to 1, 2, 3 (np.moveaxis)."""
    source = list(range(rank))
    for axis in axes:
        source.remove(axis)
    perm = [source[0], *axes, *source[1:]]
    return tuple(int(a) for a in perm)


def has_nan(reductions: tuple[LayerReduction, ...], parts: list[dict[str, np.ndarray]]) -> bool:
    """Some "max" reduction's map held a NaN (its per-channel sums say so; an inf - inf sum
    says so too, harmlessly): reduce that batch on the host for numpy's NaN semantics.
    `parts`: `split_outputs` of the batch."""
    return any(
        reduction.kind == "max" and bool(np.isnan(part[reduction.outputs[2]]).any())
        for reduction, part in zip(reductions, parts, strict=True)
    )


def split_outputs(
    reductions: tuple[LayerReduction, ...], values: list[np.ndarray]
) -> list[dict[str, np.ndarray]]:
    """Per layer, its outputs by name, from the session's flat output list."""
    result = []
    position = 0
    for reduction in reductions:
        names = reduction.outputs
        result.append(dict(zip(names, values[position : position + len(names)], strict=True)))
        position += len(names)
    return result


@dataclass(frozen=True)
class Uint8Feed:
    """The graph takes uint8 RGB [N, H, W, 3] and normalises inside (4x less to copy to a GPU).

    The nodes compute `(float(pixel) * scale - mean) / std` in float32 in the formula's order,
    after picking the channel order, then transpose to NCHW when the model wants it."""

    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: ChannelOrder
    layout: Layout


def with_uint8_input(model: onnx.ModelProto, input_name: str, feed: Uint8Feed) -> onnx.ModelProto:
    """A copy of `model` whose input `input_name` is uint8 pixels, normalised in the graph."""
    fed = onnx.ModelProto()
    fed.CopyFrom(model)
    graph = fed.graph
    inner = f"{input_name}{SEPARATOR}normalised"
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == input_name:
                node.input[i] = inner
    prefix = f"{input_name}{SEPARATOR}"
    scale = _constant(graph, prefix + "scale", np.asarray(feed.scale, np.float32))
    mean = _constant(graph, prefix + "mean", np.asarray(feed.mean, np.float32))
    std = _constant(graph, prefix + "std", np.asarray(feed.std, np.float32))
    current = input_name
    nodes = []
    if feed.channel_order == ChannelOrder.BGR:
        order = _constant(graph, prefix + "bgr", np.asarray([2, 1, 0], np.int64))
        nodes.append(helper.make_node("Gather", [current, order], [prefix + "ordered"], axis=3))
        current = prefix + "ordered"
    nodes += [
        helper.make_node("Cast", [current], [prefix + "float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [prefix + "float", scale], [prefix + "scaled"]),
        helper.make_node("Sub", [prefix + "scaled", mean], [prefix + "centred"]),
        helper.make_node(
            "Div",
            [prefix + "centred", std],
            [inner if feed.layout == Layout.NHWC else prefix + "hwc"],
        ),
    ]
    if feed.layout == Layout.NCHW:
        nodes.append(helper.make_node("Transpose", [prefix + "hwc"], [inner], perm=[0, 3, 1, 2]))
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    for value in graph.input:
        if value.name == input_name:
            value.CopyFrom(
                helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["N", None, None, 3])
            )
    return fed
