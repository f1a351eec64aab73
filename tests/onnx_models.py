"""Small ONNX CNNs with known weights, built with onnx.helper, for server tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10
OPSET = 17


def finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    """A model onnxruntime accepts: explicit IR version and opset, checked."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, root: Path, name: str) -> Path:
    path = root / f"{name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def layer_outputs(
    model: onnx.ModelProto, layers: list[str], inputs: np.ndarray, batch_size: int = 16
) -> dict[str, np.ndarray]:
    """The oracle: plain onnxruntime on the whole graph with `layers` exposed as outputs, run
    batch by batch over `inputs` (NCHW float32)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for layer in layers:
        exposed.graph.output.append(helper.make_tensor_value_info(layer, TensorProto.FLOAT, None))
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    name = exposed.graph.input[0].name
    parts = [
        session.run(layers, {name: inputs[i : i + batch_size]})
        for i in range(0, len(inputs), batch_size)
    ]
    return {layer: np.concatenate([p[j] for p in parts]) for j, layer in enumerate(layers)}


def bright_square_model(size: int = 64) -> onnx.ModelProto:
    """conv1 (4x4, stride 2, no pad): channel 0 = mean brightness of its window, channel 1 = its
    negative; relu1; pool1 (MaxPool 2x2 stride 2). A 4x4 bright square at even (y, x) makes
    conv1 channel 0 peak at exactly unit (y/2, x/2) with value brightness/255 (scale 1/255).
    """
    weights = np.zeros((2, 3, 4, 4), dtype=np.float32)
    weights[0] = 1.0 / 48.0
    weights[1] = -1.0 / 48.0
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["conv1"], kernel_shape=[4, 4], strides=[2, 2]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["pool1"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bright_square",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "w1")],
    )
    return finish(graph)


def random_cnn(seed: int = 0, size: int = 32) -> onnx.ModelProto:
    """conv_a (3x3 pad 1) -> relu -> MaxPool 2 -> conv_b (3x3 stride 2 pad 1) -> relu -> GAP ->
    Gemm logits. Random deterministic weights: the brute-force oracle checks the scan."""
    rng = np.random.default_rng(seed)
    w_a = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    b_a = rng.normal(0, 0.1, (8,)).astype(np.float32)
    w_b = rng.normal(0, 0.3, (6, 8, 3, 3)).astype(np.float32)
    b_b = rng.normal(0, 0.1, (6,)).astype(np.float32)
    w_fc = rng.normal(0, 0.5, (4, 6)).astype(np.float32)
    b_fc = np.zeros((4,), dtype=np.float32)
    nodes = [
        helper.make_node(
            "Conv", ["input", "w_a", "b_a"], ["conv_a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["conv_a"], ["relu_a"]),
        helper.make_node("MaxPool", ["relu_a"], ["pool_a"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node(
            "Conv",
            ["pool_a", "w_b", "b_b"],
            ["conv_b"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["conv_b"], ["relu_b"]),
        helper.make_node("GlobalAveragePool", ["relu_b"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "random_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        initializer=[
            numpy_helper.from_array(w_a, "w_a"),
            numpy_helper.from_array(b_a, "b_a"),
            numpy_helper.from_array(w_b, "w_b"),
            numpy_helper.from_array(b_b, "b_b"),
            numpy_helper.from_array(w_fc, "w_fc"),
            numpy_helper.from_array(b_fc, "b_fc"),
        ],
    )
    return finish(graph)


def heavy_cnn(size: int = 128, depth: int = 6, width: int = 32) -> onnx.ModelProto:
    """A model slow enough that a scan over a few hundred images takes many seconds."""
    rng = np.random.default_rng(1)
    nodes, inits = [], []
    previous, channels = "input", 3
    for i in range(depth):
        w = rng.normal(0, 0.1, (width, channels, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w{i}"], [f"conv{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        previous, channels = f"relu{i}", width
    graph = helper.make_graph(
        nodes,
        "heavy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", width, size, size])],
        initializer=inits,
    )
    return finish(graph)


def ocr_like_model(seed: int = 0) -> onnx.ModelProto:
    """A PP-OCR-like detector with a dynamic input [N, 3, H, W]: a stride-2 path `c2` plus a
    stride-32 path `c32` upsampled x16 back (`up`), added (`sum`), then `prob` = Sigmoid.
    `c32` has floor(H2 / 16) rows for H2 = ceil(H / 2), so the Add only type-checks when
    H2 is a multiple of 16: for sides that are multiples of 32 (like PP-OCR's 32 rule)."""
    rng = np.random.default_rng(seed)
    w2 = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    w32 = rng.normal(0, 0.05, (4, 4, 16, 16)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv", ["image", "w2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4
        ),
        helper.make_node("Conv", ["c2", "w32"], ["c32"], kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Resize", ["c32", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Add", ["c2", "up"], ["sum"]),
        helper.make_node("Sigmoid", ["sum"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ocr_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 4, "H2", "W2"])],
        [
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(w32, "w32"),
            numpy_helper.from_array(np.asarray([1, 1, 16, 16], dtype=np.float32), "scales"),
        ],
    )
    return finish(graph)


def detector_weights(kernel: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Weights and biases [5, 3, kernel, kernel], [5] of one conv whose channels, on input
    scaled to 0..1 and after a ReLU, are: 0 vertical stripes (period 2 along x, green),
    1 horizontal stripes (period 2 along y), 2 red (R - G - B > 0.5), 3 constant zero (dead),
    4 always 1 (fires for everything)."""
    w = np.zeros((5, 3, kernel, kernel), dtype=np.float32)
    alternating = np.array([1, -1] * (kernel // 2), dtype=np.float32)
    w[0, 1, 0, :] = alternating
    w[1, 1, :, 0] = alternating
    w[2, :, 0, 0] = [1, -1, -1]
    b = np.array([-2.0, -2.0, -0.5, -1.0, 1.0], dtype=np.float32)
    return w, b
