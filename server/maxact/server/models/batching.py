"""Scan in batches even when the model was exported with a fixed batch of 1.

The batch dimension is made symbolic (`graph.with_symbolic_batch`) and the pruned graph is
checked once: a batch of two random images must give outputs of batch 2 equal to two runs of
one image. Graphs that hard-code the batch (a Reshape to [1, -1]) fail the check and fall back
to one image per run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort

from maxact.common.kinds import Layout
from maxact.server.graph.surgery import ImageInput, prune_to_outputs, with_symbolic_batch

log = logging.getLogger("maxact.server")

SessionFactory = Callable[[onnx.ModelProto], ort.InferenceSession]


def probe_input(image_input: ImageInput, size: tuple[int, int], batch: int) -> np.ndarray:
    """Random input of the model's layout; a missing channel count means 3."""
    if image_input.layout == Layout.NCHW:
        channels = image_input.shape[1] or 3
        shape = (batch, channels, *size)
    else:
        channels = image_input.shape[3] or 3
        shape = (batch, *size, channels)
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def batches_correctly(
    session: ort.InferenceSession,
    image_input: ImageInput,
    outputs: tuple[str, ...],
    size: tuple[int, int],
    feeds: dict[str, np.ndarray] | None = None,
) -> bool:
    """True when a batch of 2 equals two runs of 1, for every exposed output (`feeds`: the
    graph's other inputs, e.g. the channel subset of in-graph reductions)."""
    probe = probe_input(image_input, size, 2)
    if session.get_inputs()[0].type == "tensor(uint8)":  # pixels normalised in the graph
        probe = np.random.default_rng(0).integers(0, 256, (2, *size, 3), dtype=np.uint8)
    extra = feeds or {}
    try:
        together = session.run(list(outputs), {image_input.name: probe, **extra})
        alone = [
            session.run(list(outputs), {image_input.name: probe[i : i + 1], **extra})
            for i in (0, 1)
        ]
    except Exception:  # any runtime failure means "not batchable"
        return False
    for j, value in enumerate(together):
        value = np.asarray(value)
        if value.shape[:1] != (2,):
            return False
        parts = np.concatenate([np.asarray(alone[0][j]), np.asarray(alone[1][j])])
        if parts.shape != value.shape or not np.allclose(value, parts, rtol=1e-4, atol=1e-5):
            return False
    return True


def batchable_session(
    proto: onnx.ModelProto,
    image_input: ImageInput,
    outputs: tuple[str, ...],
    size: tuple[int, int],
    create: SessionFactory,
    session_outputs: tuple[str, ...] | None = None,
    feeds: dict[str, np.ndarray] | None = None,
) -> ort.InferenceSession | None:
    """A session on the batch-symbolic graph pruned to `outputs`, or None if it mis-batches.

    `session_outputs`: what the created session returns when `create` appends nodes (in-graph
    reductions); every one of them is checked (default: `outputs`)."""
    try:
        session = create(prune_to_outputs(with_symbolic_batch(proto), outputs))
    except Exception as exc:  # the rewritten graph does not even load
        log.info("batch-1 model cannot be made batchable (%s); one image per run", exc)
        return None
    if batches_correctly(session, image_input, session_outputs or outputs, size, feeds):
        return session
    log.info("batch-1 model mis-batches for %s; scanning one image per run", list(outputs))
    return None
