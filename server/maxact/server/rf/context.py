"""What op handlers get to see of the graph: shapes, constant values and attributes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from maxact.server.rf.constants import Constants, attr
from maxact.server.rf.state import Unsupported

__all__ = ["Context", "attr"]


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
