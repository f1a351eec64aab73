"""Tiny vision transformers built with onnx.helper: patch Conv, CLS token, position embedding,
LayerNorm (fused or decomposed), attention with one or more heads, an Erf-GELU MLP; and a
hybrid CNN -> tokens -> CNN. Named tensors let tests ask for them by name."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import IR_VERSION, OPSET


@dataclass
class _Graph:
    """Nodes and weights of one model under construction (random weights, fixed seed)."""

    rng: np.random.Generator
    nodes: list[onnx.NodeProto]
    inits: list[onnx.TensorProto]
    count: int = 0

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        self.count += 1
        name = name or f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape: int, scale: float = 1.0) -> str:
        fan = shape[0] if len(shape) > 1 else 1
        value = self.rng.standard_normal(shape) * scale / math.sqrt(fan)
        return self.const(value.astype(np.float32))

    def op(self, op: str, inputs: list[str], output: str | None = None, **attrs: object) -> str:
        self.count += 1
        out = output or f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n{self.count}", **attrs))
        return out

    def linear(self, x: str, cin: int, cout: int, output: str | None = None) -> str:
        y = self.op("MatMul", [x, self.weight(cin, cout)])
        return self.op("Add", [y, self.weight(cout, scale=0.1)], output)

    def layer_norm(self, x: str, dim: int, decomposed: bool, output: str) -> str:
        gamma = self.const((1 + 0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        beta = self.const((0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        if not decomposed:
            return self.op("LayerNormalization", [x, gamma, beta], output, axis=-1, epsilon=1e-5)
        mean = self.op("ReduceMean", [x], axes=[-1])  # opset 17: axes as an attribute
        centred = self.op("Sub", [x, mean])
        square = self.op("Pow", [centred, self.const(np.asarray(2.0, np.float32))])
        var = self.op("ReduceMean", [square], axes=[-1])
        std = self.op("Sqrt", [self.op("Add", [var, self.const(np.asarray(1e-5, np.float32))])])
        normed = self.op("Div", [centred, std])
        return self.op("Add", [self.op("Mul", [normed, gamma]), beta], output)

    def gelu(self, x: str, output: str) -> str:
        """The Erf form older exporters write: x * 0.5 * (1 + erf(x / sqrt(2)))."""
        scaled = self.op("Div", [x, self.const(np.asarray(math.sqrt(2), np.float32))])
        erf = self.op("Erf", [scaled])
        one = self.op("Add", [erf, self.const(np.asarray(1.0, np.float32))])
        return self.op(
            "Mul", [self.op("Mul", [x, one]), self.const(np.asarray(0.5, np.float32))], output
        )


def _attention(g: _Graph, x: str, tokens: int, dim: int, heads: int, prefix: str) -> str:
    """Self-attention over the tokens of x [N, T, D]; names `{prefix}scores` and so on."""
    q, k, v = (g.linear(x, dim, dim, f"{prefix}{n}") for n in ("q", "k", "v"))
    d = dim // heads
    if heads == 1:
        kt = g.op("Transpose", [k], perm=[0, 2, 1])
    else:
        split = g.const(np.asarray([0, tokens, heads, d], np.int64))
        q = g.op("Transpose", [g.op("Reshape", [q, split])], perm=[0, 2, 1, 3])
        kt = g.op("Transpose", [g.op("Reshape", [k, split])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, split])], perm=[0, 2, 1, 3])
    scores = g.op("MatMul", [q, kt], f"{prefix}scores")
    scaled = g.op("Mul", [scores, g.const(np.asarray(1 / math.sqrt(d), np.float32))])
    attn = g.op("Softmax", [scaled], f"{prefix}attn", axis=-1)
    mixed = g.op("MatMul", [attn, v], f"{prefix}mixed")
    if heads > 1:
        merged = g.op("Transpose", [mixed], perm=[0, 2, 1, 3])
        mixed = g.op("Reshape", [merged, g.const(np.asarray([0, tokens, dim], np.int64))])
    return g.linear(mixed, dim, dim, f"{prefix}proj")


def _block(g: _Graph, x: str, tokens: int, dim: int, heads: int, decomposed: bool, k: int) -> str:
    """A pre-norm transformer block: x + attn(ln(x)), then + mlp(ln(.)). Hidden = 2 * dim."""
    p = f"block{k}."
    ln1 = g.layer_norm(x, dim, decomposed, f"{p}ln1")
    res1 = g.op("Add", [x, _attention(g, ln1, tokens, dim, heads, p)], f"{p}attn_out")
    ln2 = g.layer_norm(res1, dim, decomposed, f"{p}ln2")
    hidden = g.gelu(g.linear(ln2, dim, 2 * dim, f"{p}fc1"), f"{p}mlp")
    return g.op("Add", [res1, g.linear(hidden, 2 * dim, dim)], f"{p}out")


def _finish(g: _Graph, image: str, size: tuple[int, int], outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        g.nodes,
        "tiny_vit",
        [helper.make_tensor_value_info(image, TensorProto.FLOAT, ["N", 3, *size])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def _patches(g: _Graph, size: tuple[int, int], patch: int, dim: int) -> tuple[str, int]:
    """Patch embedding: Conv kernel = stride = patch, then [N, D, h*w] -> [N, T, D]."""
    conv = g.op(
        "Conv",
        ["image", g.weight(dim, 3, patch, patch)],
        "patch_embed",
        kernel_shape=[patch, patch],
        strides=[patch, patch],
    )
    flat = g.op("Reshape", [conv, g.const(np.asarray([0, dim, -1], np.int64))], "patch_flat")
    grid = (size[0] // patch) * (size[1] // patch)
    return g.op("Transpose", [flat], "patch_tokens", perm=[0, 2, 1]), grid


def tiny_vit(
    size: tuple[int, int] = (32, 32),
    patch: int = 8,
    dim: int = 8,
    heads: int = 1,
    prefix: int = 1,
    decomposed: bool = False,
    blocks: int = 1,
    seed: int = 0,
) -> onnx.ModelProto:
    """A ViT: `prefix` learned tokens (CLS, registers) via Expand + Concat in front of the
    patch tokens, a position embedding Add, `blocks` transformer blocks, the CLS head."""
    g = _Graph(np.random.default_rng(seed), [], [])
    tokens, grid = _patches(g, size, patch, dim)
    x = tokens
    if prefix:
        batch = g.op("Gather", [g.op("Shape", [tokens]), g.const(np.asarray([0], np.int64))])
        shape = g.op("Concat", [batch, g.const(np.asarray([prefix, dim], np.int64))], axis=0)
        cls = g.op("Expand", [g.weight(1, prefix, dim), shape], "cls_tokens")
        x = g.op("Concat", [cls, tokens], "with_cls", axis=1)
    total = prefix + grid
    x = g.op("Add", [x, g.weight(1, total, dim, scale=0.5)], "embedded")
    for k in range(blocks):
        x = _block(g, x, total, dim, heads, decomposed, k)
    x = g.layer_norm(x, dim, decomposed, "final_ln")
    outputs = [x]
    if prefix:
        cls_out = g.op("Gather", [x, g.const(np.asarray(0, np.int64))], "cls_out", axis=1)
        outputs = [g.linear(cls_out, dim, 4, "logits")]
    return _finish(g, "image", size, outputs)


def hybrid(size: tuple[int, int] = (32, 48), dim: int = 8, seed: int = 0) -> onnx.ModelProto:
    """CNN (3x3 conv, stride 2 conv) -> tokens -> one attention block -> back to [N, C, H, W]
    -> 3x3 conv: the shape of PP-OCR's SVTR neck."""
    g = _Graph(np.random.default_rng(seed), [], [])
    c1 = g.op(
        "Conv", ["image", g.weight(dim, 3, 3, 3)], "cnn1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
    )
    r1 = g.op("Relu", [c1], "cnn1_relu")
    c2 = g.op(
        "Conv",
        [r1, g.weight(dim, dim, 3, 3)],
        "cnn2",
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
    )
    h, w = size[0] // 2, size[1] // 2
    flat = g.op("Reshape", [c2, g.const(np.asarray([0, dim, -1], np.int64))], "cnn_flat")
    tokens = g.op("Transpose", [flat], "tokens", perm=[0, 2, 1])
    out = _block(g, tokens, h * w, dim, 2, False, 0)
    back = g.op("Transpose", [out], "tokens_t", perm=[0, 2, 1])
    grid = g.op("Reshape", [back, g.const(np.asarray([0, dim, h, w], np.int64))], "grid_back")
    c3 = g.op(
        "Conv", [grid, g.weight(dim, dim, 3, 3)], "cnn3", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
    )
    return _finish(g, "image", size, [c3])


def with_cumsum_over_tokens(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """`model` with a CumSum over the token axis (axis 1) of `tensor` feeding one more output:
    an op the engine cannot trace on tokens."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    axis = numpy_helper.from_array(np.asarray(1, np.int64), "cumsum_axis")
    out.graph.initializer.append(axis)
    out.graph.node.append(helper.make_node("CumSum", [tensor, "cumsum_axis"], ["cumsum"]))
    out.graph.node.append(helper.make_node("Relu", ["cumsum"], ["after_cumsum"]))
    out.graph.output.append(helper.make_tensor_value_info("after_cumsum", TensorProto.FLOAT, None))
    return out


def fused_attention(
    size: tuple[int, int] = (16, 16), patch: int = 4, dim: int = 8
) -> onnx.ModelProto:
    """Patch tokens -> com.microsoft MultiHeadAttention (2 heads) -> SkipLayerNormalization
    -> FastGelu: the fused ops onnxruntime's transformer optimiser writes."""
    g = _Graph(np.random.default_rng(1), [], [])
    tokens, _ = _patches(g, size, patch, dim)
    ms = {"domain": "com.microsoft"}
    q, k, v = (g.linear(tokens, dim, dim, n) for n in ("q", "k", "v"))
    mha = g.op("MultiHeadAttention", [q, k, v], "mha", num_heads=2, **ms)
    gamma = g.const(np.ones(dim, np.float32))
    beta = g.const(np.zeros(dim, np.float32))
    skip = g.op("SkipLayerNormalization", [mha, tokens, gamma, beta], "skip_ln", **ms)
    out = g.op("FastGelu", [g.linear(skip, dim, dim)], "fast_gelu", **ms)
    graph = helper.make_graph(
        g.nodes,
        "fused",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *size])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = IR_VERSION
    return model
