"""What op handlers get to see of the graph: shapes, constant values and attributes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from maxact.server.rf.constants import Constants, attr
from maxact.server.rf.state import Unsupported

__all__ = ["Context", "attr", "reduce_axes", "slice_params"]


@dataclass
class Context:
    """Per-model facts shared by all handlers."""

    shapes: dict[str, tuple[int, ...]]
    consts: Constants
    opset: int

    def shape(self, name: str) -> tuple[int, ...]:
        """Concrete shape of `name`; a handler cannot go on without it."""
        shape = self.shapes.get(name)
        if shape is None:
            raise Unsupported(f"shape of {name!r} is unknown")
        return shape

    def value(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """Constant value of the node's input `index` (None when absent or empty)."""
        if index >= len(node.input) or not node.input[index]:
            return None
        value = self.consts.get(node.input[index])
        if value is None:
            raise Unsupported(f"input {node.input[index]!r} is not a constant maxact can fold")
        return value if value.size else None

    def required(self, node: onnx.NodeProto, index: int) -> np.ndarray:
        """Like `value`, for an input the handler cannot go on without."""
        value = self.value(node, index)
        if value is None:
            raise Unsupported(f"{node.op_type} {node.name!r} has no input {index}")
        return value


def reduce_axes(ctx: Context, node: onnx.NodeProto, rank: int) -> set[int] | None:
    """The axes a Reduce*/ArgMax node reduces (attribute or input), None: all of them."""
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = ctx.required(node, 1).tolist()
    if axes is None and node.op_type in ("ArgMax", "ArgMin"):
        axes = [attr(node, "axis", 0)]
    return None if axes is None else {int(a) % rank for a in axes}


def slice_params(
    ctx: Context, node: onnx.NodeProto, rank: int
) -> tuple[list[int], list[int], list[int]]:
    """(starts, axes, steps) of a Slice node, from attributes (opset < 10) or inputs."""
    given_axes: list[int] | None
    given_steps: list[int] | None = None
    if ctx.opset < 10:
        starts, given_axes = list(attr(node, "starts")), attr(node, "axes")
    else:
        starts = ctx.required(node, 1).tolist()
        axes_value, steps_value = ctx.value(node, 3), ctx.value(node, 4)
        given_axes = None if axes_value is None else axes_value.tolist()
        given_steps = None if steps_value is None else steps_value.tolist()
    axes = list(range(len(starts))) if given_axes is None else [int(a) % rank for a in given_axes]
    steps = [1] * len(starts) if given_steps is None else [int(s) for s in given_steps]
    return [int(s) for s in starts], axes, steps
