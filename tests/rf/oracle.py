"""Numerical receptive-field oracle, independent of the engine.

The graph is rewritten into a positive linear function of the input: every weight |w| + 1
(scaled by the fan-in), biases dropped, MaxPool/LpPool -> AveragePool, activations and
normalisations -> Identity, LRN -> a banded 1x1 conv, Softmax over channels -> a 1x1 conv of
ones (over space -> Identity), gates broadcast over space dropped,
Mul/Sub/Div/Max/Min -> Sum of the local inputs, constant padding value 0. A unit is then
positive iff some set input pixel can reach it. Feeding row sweeps (rows 0..r set, and rows
r..H-1 set; likewise columns) reveals each unit's exact first and last input row and column.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

IDENTITY = set(
    [
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Clip",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "Softplus",
        "Exp",
        "Log",
        "Sqrt",
        "Neg",
        "Abs",
        "Reciprocal",
        "Pow",
        "Erf",
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "Identity",
        "Cast",
        "Dropout",
    ]
)
COMBINE = set(["Add", "Mul", "Sub", "Div", "Max", "Min", "Sum", "Mean"])
WEIGHTED = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1}


def _run_all(model: onnx.ModelProto, feed: dict[str, np.ndarray], names: list[str]) -> list:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    for n in names:
        m.graph.output.append(onnx.ValueInfoProto(name=n))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(names, feed)


def _shapes(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    names = [o for n in model.graph.node for o in n.output if o]
    outs = _run_all(model, feed, names)
    shapes = {n: tuple(np.shape(v)) for n, v in zip(names, outs, strict=True)}
    shapes.update({k: v.shape for k, v in feed.items()})
    return shapes


def _is_gate(shape: tuple[int, ...]) -> bool:
    """Broadcast over space: all dims but batch and at most one other are 1."""
    return sum(1 for d in shape[1:] if d > 1) <= 1


def positive_linear(model: onnx.ModelProto, image_shape: tuple[int, ...]) -> onnx.ModelProto:
    """The rewritten graph (see module docstring)."""
    g = model.graph
    feed = {g.input[0].name: np.zeros(image_shape, np.float32)}
    shapes = _shapes(model, feed)
    values = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    dependent = {g.input[0].name}
    new_values: dict[str, np.ndarray] = {}
    nodes = []
    for n in g.node:
        ins_dep = [i for i in n.input if i in dependent]
        if ins_dep and n.op_type not in ("Shape", "Size"):
            dependent.update(o for o in n.output if o)
        node = onnx.NodeProto()
        node.CopyFrom(n)
        op = n.op_type
        if not ins_dep:
            nodes.append(node)
            continue
        if op in IDENTITY:
            nodes.append(helper.make_node("Identity", [n.input[0]], [n.output[0]]))
        elif op in COMBINE:
            local = [i for i in ins_dep if not _is_gate(shapes[i])] or ins_dep
            nodes.append(
                helper.make_node("Sum" if len(local) > 1 else "Identity", local, [n.output[0]])
            )
        elif op in WEIGHTED:
            w = values[n.input[1]]
            fan = max(w.size // max(w.shape[0], 1), 1)
            new_values[n.input[1]] = ((np.abs(w) + 1) / fan).astype(w.dtype)
            del node.input[2:]
            nodes.append(node)
        elif op in ("MaxPool", "LpPool"):
            attrs = {
                a.name: helper.get_attribute_value(a)
                for a in n.attribute
                if a.name not in ("p", "storage_order")
            }
            if any(d != 1 for d in attrs.get("dilations", [1])):
                c = shapes[n.input[0]][1]
                k = attrs.pop("kernel_shape")
                attrs.pop("ceil_mode", None)
                w = np.ones((c, 1, *k), np.float32)
                wname = n.output[0] + "_ones"
                new_values[wname] = w
                nodes.append(
                    helper.make_node(
                        "Conv", [n.input[0], wname], [n.output[0]], group=c, kernel_shape=k, **attrs
                    )
                )
            else:
                nodes.append(helper.make_node("AveragePool", [n.input[0]], [n.output[0]], **attrs))
        elif op == "GlobalMaxPool":
            nodes.append(helper.make_node("GlobalAveragePool", [n.input[0]], [n.output[0]]))
        elif op in ("Softmax", "LogSoftmax"):
            rank = len(shapes[n.input[0]])
            axis = next((a.i for a in n.attribute if a.name == "axis"), -1) % rank
            if rank == 4 and axis == 1:  # over channels: every channel reads every channel
                c = shapes[n.input[0]][1]
                wname = n.output[0] + "_all"
                new_values[wname] = np.ones((c, c, 1, 1), np.float32)
                nodes.append(
                    helper.make_node(
                        "Conv", [n.input[0], wname], [n.output[0]], kernel_shape=[1, 1]
                    )
                )
            else:  # over space (or a flat tensor): the local field stays
                nodes.append(helper.make_node("Identity", [n.input[0]], [n.output[0]]))
        elif op == "LRN":
            size = next(helper.get_attribute_value(a) for a in n.attribute if a.name == "size")
            c = shapes[n.input[0]][1]
            lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
            band = np.array(
                [[1.0 if -lo <= j - i <= hi else 0.0 for j in range(c)] for i in range(c)],
                np.float32,
            )
            wname = n.output[0] + "_band"
            new_values[wname] = band[:, :, None, None]
            nodes.append(
                helper.make_node("Conv", [n.input[0], wname], [n.output[0]], kernel_shape=[1, 1])
            )
        elif op == "Pad":
            del node.input[2:3]
            for a in node.attribute:
                if a.name == "value":
                    a.f = 0.0
            nodes.append(node)
        elif op == "Resize" and any(helper.get_attribute_value(a) == b"cubic" for a in n.attribute):
            raise ValueError("the oracle cannot make a cubic Resize positive")
        else:
            nodes.append(node)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(_materialise(nodes, values, new_values, g))
    keep = [t for t in out.graph.initializer if t.name not in new_values]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    out.graph.initializer.extend(
        numpy_helper.from_array(v, k)
        for k, v in new_values.items()
        if k not in _constant_outputs(g)
    )
    return out


def _constant_outputs(g: onnx.GraphProto) -> set[str]:
    return {n.output[0] for n in g.node if n.op_type == "Constant"}


def _materialise(nodes: list, values: dict, new_values: dict, g: onnx.GraphProto) -> list:
    """Constant nodes whose value was made positive get the new value."""
    out = []
    for n in nodes:
        if n.op_type == "Constant" and n.output[0] in new_values:
            n = helper.make_node(
                "Constant",
                [],
                [n.output[0]],
                value=numpy_helper.from_array(new_values[n.output[0]]),
            )
        out.append(n)
    return out


def sweeps(shape: tuple[int, ...], h_axis: int, w_axis: int) -> tuple[np.ndarray, ...]:
    """Row prefix, row suffix, column prefix, column suffix indicator batches."""
    h, w = shape[h_axis], shape[w_axis]
    out = []
    for axis, n in ((h_axis, h), (w_axis, w)):
        for suffix in (False, True):
            batch = np.zeros((n, *shape[1:]), np.float32)
            for r in range(n):
                sl = [slice(None)] * len(shape)
                sl[0] = r
                sl[axis] = slice(r, None) if suffix else slice(0, r + 1)
                batch[tuple(sl)] = 1.0
            out.append(batch)
    return tuple(out)


def _first_true(mask: np.ndarray) -> np.ndarray:
    """Index of the first True along axis 0, -1 where none."""
    any_ = mask.any(axis=0)
    return np.where(any_, mask.argmax(axis=0), -1)


def oracle_fields(
    model: onnx.ModelProto,
    image_shape: tuple[int, ...],
    h_axis: int,
    w_axis: int,
    tensors: list[str],
    chunk: int = 64,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per tensor: (row_lo, row_hi, col_lo, col_hi), each shaped like the tensor without batch.

    Half-open; a unit no pixel reaches gets lo = hi = 0.
    """
    lin = positive_linear(model, image_shape)
    name = model.graph.input[0].name
    masks: list[dict[str, np.ndarray]] = []
    for batch in sweeps(image_shape, h_axis, w_axis):
        parts = [
            _run_all(lin, {name: batch[i : i + chunk]}, tensors)
            for i in range(0, len(batch), chunk)
        ]
        masks.append({t: np.concatenate([p[k] for p in parts]) > 0 for k, t in enumerate(tensors)})
    result = {}
    for t in tensors:
        bounds = []
        for pre, suf in ((masks[0][t], masks[1][t]), (masks[2][t], masks[3][t])):
            n = pre.shape[0]
            lo = _first_true(pre)
            last = _first_true(suf[::-1])
            hi = np.where(last >= 0, n - last, 0)
            empty = lo < 0
            bounds += [np.where(empty, 0, lo), np.where(empty, 0, hi)]
        result[t] = tuple(bounds)
    return result
