"""Values of constant tensors: initializers, Constant nodes and small shape computations.

Op handlers need attribute-like inputs (Pad pads, Resize scales, Slice starts...). Exporters
deliver them as initializers, Constant nodes or short Shape->Gather->Concat chains; the latter are
folded here with numpy using the inferred shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """Attribute value of a node (bytes decoded to str), or `default`. Typed Any on purpose:
    an ONNX attribute is an int, float, str, list or tensor by its name, which the caller knows
    (onnx.helper.get_attribute_value is untyped the same way)."""
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.array(onnx.helper.get_attribute_value(a))
        if a.name in ("value_floats", "value_ints"):
            return np.array(list(onnx.helper.get_attribute_value(a)))
    return None


Ints = np.ndarray | Sequence[int]  # a Slice input: a folded constant or attribute values


def _slice(
    x: np.ndarray,
    starts: Ints,
    ends: Ints,
    axes: Ints | None = None,
    steps: Ints | None = None,
) -> np.ndarray:
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        sl[a] = slice(int(s), int(e), int(st))
    return x[tuple(sl)]


class Constants:
    """Lazily folded values of the image-independent tensors of a graph."""

    def __init__(self, graph: onnx.GraphProto, shapes: dict[str, tuple[int, ...]]) -> None:
        self.shapes = shapes
        self.values: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer
        }
        self.producer: dict[str, onnx.NodeProto] = {}
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            if node.op_type == "Constant" and node.output:
                value = _constant_node_value(node)
                if value is not None:
                    self.values[node.output[0]] = value

    def get(self, name: str) -> np.ndarray | None:
        """The value of `name`, or None when it cannot be folded."""
        if not name:
            return None
        if name in self.values:
            return self.values[name]
        node = self.producer.get(name)
        value: object = None
        if node is not None and node.op_type in _FOLD:
            try:
                value = _FOLD[node.op_type](self, node)
            except Exception:  # folding is best effort; the caller reports what it misses
                value = None
        if value is None:
            return None
        self.values[name] = np.asarray(value)
        return self.values[name]

    def inputs(self, node: onnx.NodeProto) -> list[np.ndarray | None]:
        return [self.get(i) for i in node.input]


def _fold_shape(c: Constants, n: onnx.NodeProto) -> np.ndarray | None:
    shape = c.shapes.get(n.input[0])
    if shape is None:
        return None
    start, end = attr(n, "start", 0), attr(n, "end", None)
    return np.array(shape[start:end], dtype=np.int64)


def _fold_all(fn: Callable[..., np.ndarray]) -> Callable[[Constants, onnx.NodeProto], object]:
    def fold(c: Constants, n: onnx.NodeProto) -> object:
        vals = c.inputs(n)
        if any(v is None for v in vals):
            return None
        return fn(n, *vals)

    return fold


def _unsqueeze(n: onnx.NodeProto, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    ax = attr(n, "axes") if axes is None else axes.tolist()
    for a in sorted(int(a) % (x.ndim + len(ax)) for a in ax):
        x = np.expand_dims(x, a)
    return x


def _squeeze(n: onnx.NodeProto, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    ax = attr(n, "axes") if axes is None else axes.tolist()
    return np.squeeze(x, axis=None if ax is None else tuple(int(a) for a in ax))


_FOLD: dict[str, Callable[[Constants, onnx.NodeProto], object]] = {
    "Shape": _fold_shape,
    "Identity": _fold_all(lambda n, x: x),
    "Cast": _fold_all(lambda n, x: x.astype(onnx.helper.tensor_dtype_to_np_dtype(attr(n, "to")))),
    "Concat": _fold_all(lambda n, *xs: np.concatenate(xs, axis=attr(n, "axis"))),
    "Gather": _fold_all(lambda n, x, i: np.take(x, i, axis=attr(n, "axis", 0))),
    "Unsqueeze": _fold_all(_unsqueeze),
    "Squeeze": _fold_all(_squeeze),
    "Slice": _fold_all(lambda n, x, *a: _slice(x, *a)),
    "Add": _fold_all(lambda n, a, b: a + b),
    "Sub": _fold_all(lambda n, a, b: a - b),
    "Mul": _fold_all(lambda n, a, b: a * b),
    "Div": _fold_all(lambda n, a, b: a // b if a.dtype.kind in "iu" else a / b),
    "Floor": _fold_all(lambda n, x: np.floor(x)),
    "Ceil": _fold_all(lambda n, x: np.ceil(x)),
    "Reshape": _fold_all(lambda n, x, s: x.reshape([int(v) for v in s])),
}
