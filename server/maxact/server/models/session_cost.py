"""What a new onnxruntime session will cost, estimated BEFORE it is built, so that the caches
make room for it first and the process never goes over its memory budget while it is built and
run for the first time.

Measured on PP-OCRv4 det (per layer set, inputs 736 x 288..1888): building a session grows
the process by 0-29 MB (weights, prepacked copies, the optimised graph: 2-7 MB for a layer set
of 100-200 nodes, 21-29 MB for 507) and its first run by another 5-72 MB (what onnxruntime's
arena keeps, growing with the input size). A session
is described by its `size_bytes` (`pruned_size_bytes`): the weights its pruned graph keeps,
NODE_BYTES per node and the float32 bytes per image of the largest tensor it computes at the
input size. A model's sessions cost roughly in proportion (1.1-1.5 bytes per size byte on
PP-OCRv4 det's layer sets): a new one is estimated at its size times the highest cost per byte
measured on the model's last HISTORY sessions, and before any is measured at `COLD_RATE` per
byte (a first session run at a large batch, e.g. a classifier scanned 16 images at a time,
can cost more: its arena holds the whole batch; its measured rate then covers the next ones).
A deeper layer set keeps every node of a shallower one, so it is never estimated below what a
shallower one cost at the same input size.
"""

from __future__ import annotations

import math
import threading
from collections import deque

import onnx

FLOAT_BYTES = 4
COLD_RATE = 2.0  # cost per size byte before a model's first session is measured
NODE_BYTES = 64 * 1024  # build growth per node: 25 MB for PP-OCRv4 det's 507 nodes
HISTORY = 8  # measured sessions per model the rate is taken over


def pruned_size_bytes(pruned: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """The weights `pruned` keeps, NODE_BYTES per node (kernels, the optimised graph) and the
    float32 bytes per image of the largest tensor its nodes compute at the input size
    (`shapes`; an unknown shape counts 0): each grows with the depth of the layer set."""
    weights = sum(_tensor_bytes(init) for init in pruned.graph.initializer)
    computed = {name for node in pruned.graph.node for name in node.output if name}
    largest = max((per_image(shapes.get(name, ())) for name in computed), default=0)
    return weights + NODE_BYTES * len(pruned.graph.node) + FLOAT_BYTES * largest


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    if tensor.raw_data:
        return len(tensor.raw_data)
    return FLOAT_BYTES * math.prod(tensor.dims)


def per_image(shape: tuple[int, ...]) -> int:
    """Elements per image of a [N, ...] shape (0 for a scalar, a 1-D or an unknown shape)."""
    return math.prod(shape[1:]) if len(shape) >= 2 and min(shape) > 0 else 0


class SessionCosts:
    """Per model, (size bytes, measured cost) of its last measured sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._measured: dict[str, deque[tuple[int, int]]] = {}

    def estimate(self, model: str, size_bytes: int) -> int:
        """Bytes a new session of `model` of `size_bytes` is expected to cost."""
        with self._lock:
            found = self._measured.get(model)
            rate = max(cost / size for size, cost in found) if found else COLD_RATE
        return int(rate * size_bytes)

    def measured(self, model: str, size_bytes: int, cost: int) -> None:
        """A session of `size_bytes` turned out to cost `cost` (build and first run)."""
        if size_bytes <= 0 or cost <= 0:
            return
        with self._lock:
            self._measured.setdefault(model, deque(maxlen=HISTORY)).append((size_bytes, cost))

    def last(self, model: str) -> tuple[int, int] | None:
        """(size bytes, cost) of the model's last measured session."""
        with self._lock:
            found = self._measured.get(model)
            return found[-1] if found else None
