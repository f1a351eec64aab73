"""What a new onnxruntime session will cost, estimated BEFORE it is built, so that the caches
make room for it first and the process never goes over its memory budget while it is built and
run for the first time.

Measured on PP-OCRv4 det (per layer set, input 736 x W): building a session grows the process
by 6-33 MB (its weights, prepacked copies, the optimised graph) and its first run by another
19-64 MB (what onnxruntime's arena keeps), growing with the depth of the layer set. A session
is described by its `size_bytes`: the weights its pruned graph keeps plus, per image, the
float32 tensors it computes at the input size (`pruned_size_bytes`). A model's sessions cost
roughly in proportion: the estimate of a new one is its size times the highest cost per byte
measured on the model's last sessions, and before any is measured, `COLD_RATE` (an upper
bound of what was measured: 0.3-1.9 on PP-OCRv4 det and PP-LCNet). A deeper layer set keeps
every node of a shallower one, so it is never estimated below what a shallower one cost.
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
    largest = max((_per_image(shapes.get(name, ())) for name in computed), default=0)
    return weights + NODE_BYTES * len(pruned.graph.node) + FLOAT_BYTES * largest


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    if tensor.raw_data:
        return len(tensor.raw_data)
    return FLOAT_BYTES * math.prod(tensor.dims)


def _per_image(shape: tuple[int, ...]) -> int:
    return math.prod(shape[1:]) if len(shape) >= 2 and min(shape) > 0 else 0


class SessionCosts:
    """Per model, the cost per size byte of its last measured sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[str, deque[float]] = {}

    def estimate(self, model: str, size_bytes: int) -> int:
        """Bytes a new session of `model` of `size_bytes` is expected to cost."""
        with self._lock:
            rates = self._rates.get(model)
            rate = max(rates) if rates else COLD_RATE
        return int(rate * size_bytes)

    def measured(self, model: str, size_bytes: int, cost: int) -> None:
        """A session of `size_bytes` turned out to cost `cost` (build and first run)."""
        if size_bytes <= 0 or cost <= 0:
            return
        with self._lock:
            self._rates.setdefault(model, deque(maxlen=HISTORY)).append(cost / size_bytes)
