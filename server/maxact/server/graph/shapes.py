"""Concrete shapes of every tensor of an ONNX model for given input shapes.

onnx shape inference first (with the graph inputs' dynamic dims fixed); where it leaves a tensor
without a full static shape, the graph is run once on zeros with onnxruntime (CPU) with those
tensors exposed as outputs.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

log = logging.getLogger(__name__)


def _dims(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        dims.append(d.dim_value)
    return tuple(dims)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (not initializers listed as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _fix_inputs(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Set every real input's dims in place; returns name -> concrete shape used."""
    fixed = {}
    for vi in graph_inputs(model):
        dims = vi.type.tensor_type.shape.dim
        given = input_shapes.get(vi.name)
        if given is not None and len(given) != len(dims):
            raise ValueError(f"input {vi.name!r} has rank {len(dims)}, got shape {given}")
        shape = []
        for k, d in enumerate(dims):
            value = given[k] if given is not None else (d.dim_value if d.dim_value > 0 else 1)
            d.Clear()
            d.dim_value = int(value)
            shape.append(int(value))
        fixed[vi.name] = tuple(shape)
    return fixed


def infer_shapes(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Concrete shape of every tensor: graph inputs, initializers and node outputs.

    Dynamic dims of inputs not in `input_shapes` (e.g. batch) become 1.
    """
    return infer_shapes_reporting(model, input_shapes)[0]


def infer_shapes_reporting(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> tuple[dict[str, tuple[int, ...]], str]:
    """`infer_shapes` and why some node outputs have no shape ("" when all have one): a
    model that only takes some input sizes fails here, and the caller must say so."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    fixed = _fix_inputs(m, input_shapes or {})
    inference_error = ""
    try:
        inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception as exc:  # inference is best effort; the onnxruntime run fills the gaps
        log.debug("onnx shape inference failed: %s", exc)
        inference_error = f"onnx shape inference: {_first_line(exc)}"
        inferred = m
    shapes: dict[str, tuple[int, ...]] = dict(fixed)
    for t in m.graph.initializer:
        shapes[t.name] = tuple(t.dims)
    g = inferred.graph
    for vi in [*g.value_info, *g.output, *g.input]:
        dims = _dims(vi)
        if dims is not None:
            shapes.setdefault(vi.name, dims)
    for node in m.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(a.t.dims)
    missing = [o for n in m.graph.node for o in n.output if o and o not in shapes]
    run_error = ""
    if missing:
        found, run_error = _run_for_shapes(m, fixed, missing)
        shapes.update(found)
    still = [o for o in missing if o not in shapes]
    return shapes, (run_error or inference_error or "unknown reason") if still else ""


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _run_for_shapes(
    m: onnx.ModelProto, fixed: dict[str, tuple[int, ...]], names: list[str]
) -> tuple[dict[str, tuple[int, ...]], str]:
    """Run the graph once on zeros, exposing `names`; tensors it cannot produce stay missing.

    `m` is infer_shapes' private copy: its outputs are extended in place (no second copy of
    the weights).
    """
    import onnxruntime as ort

    known = {o.name for o in m.graph.output}
    for name in names:
        if name not in known:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    feeds = {}
    for vi in graph_inputs(m):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = np.zeros(fixed[vi.name], dtype=dtype)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs = sess.run(names, feeds)
    except Exception as exc:
        log.info("could not run the model to complete shape inference: %s", exc)
        return {}, f"onnxruntime: {_first_line(exc)}"
    return {n: tuple(np.asarray(v).shape) for n, v in zip(names, outs, strict=True)}, ""
