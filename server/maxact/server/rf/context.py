"""What op handlers get to see of the graph: shapes, constant values and attributes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .constants import Constants
from .state import Unsupported


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """Attribute value of a node (bytes decoded to str), or `default`."""
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


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
