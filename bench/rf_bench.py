"""Benchmark: receptive fields of a 200-layer ResNet-like graph at 224x224.

Prints the seconds for shape inference, for the field algebra, and for materialising every
tensor's public field (exact per-unit boxes included). Run: python bench/rf_bench.py
"""

from __future__ import annotations

import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from maxact.server.graph.shapes import infer_shapes
from maxact.server.rf import compute_receptive_fields


def resnet_like(layers: int = 200, width: int = 8) -> onnx.ModelProto:
    """Stem + residual blocks (conv-bn-relu x2 + add, strided 1x1 shortcuts) until `layers`."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    count = 0

    def add(op: str, ins: list[str], **attrs: object) -> str:
        nonlocal count
        count += 1
        out = f"{op.lower()}_{count}"
        nodes.append(helper.make_node(op, ins, [out], name=f"n{count}", **attrs))
        return out

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        w = f"w{len(inits)}"
        inits.append(numpy_helper.from_array(rng.standard_normal((cout, cin, k, k), "float32"), w))
        return add("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    x = add("Relu", [conv("x", 3, width, 7, 2)])
    x = add("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    block = 0
    while count < layers - 3:
        stride = 2 if block in (8, 16, 24) else 1
        y = add("Relu", [conv(x, width, width, 3, stride)])
        y = conv(y, width, width, 3)
        short = conv(x, width, width, 1, stride) if stride > 1 else x
        x = add("Relu", [add("Add", [y, short])])
        block += 1
    x = add("GlobalAveragePool", [x])
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def main() -> None:
    model = resnet_like()
    print(f"graph: {len(model.graph.node)} nodes")
    t0 = time.perf_counter()
    shapes = infer_shapes(model, {"x": (1, 3, 224, 224)})
    t1 = time.perf_counter()
    rf = compute_receptive_fields(model, (224, 224), shapes=shapes)
    t2 = time.perf_counter()
    fields = [rf.field(t) for t in rf.tensors()]
    t3 = time.perf_counter()
    print(f"shape inference        {t1 - t0:.3f} s")
    print(f"field algebra          {t2 - t1:.3f} s")
    print(f"public fields ({len(fields)})   {t3 - t2:.3f} s")
    print(f"total                  {t3 - t0:.3f} s")


if __name__ == "__main__":
    main()
