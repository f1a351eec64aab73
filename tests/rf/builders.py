"""Tiny ONNX graph builder for receptive-field tests (known geometry, random weights)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Net:
    """Appends nodes to a graph with one image input; tracks channel counts per tensor."""

    def __init__(
        self,
        size: tuple[int, int] = (32, 32),
        channels: int = 3,
        layout: str = "nchw",
        opset: int = 17,
        const_weights: bool = False,
        seed: int = 0,
    ) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.ch: dict[str, int] = {"x": channels}
        self.opset, self.layout, self.const_weights = opset, layout, const_weights
        self.rng = np.random.default_rng(seed)
        self.size, self.channels = size, channels
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}.{self._n}"

    def const(self, value: np.ndarray, prefix: str = "w", as_node: bool | None = None) -> str:
        """A weight, as an initializer or (const_weights) as a Constant node."""
        name = self.name(prefix)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        if self.const_weights if as_node is None else as_node:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        else:
            self.inits.append(tensor)
        return name

    def op(
        self,
        op: str,
        inputs: list[str],
        channels: int | None = None,
        outputs: int = 1,
        domain: str = "",
        **attrs: object,
    ) -> str | list[str]:
        """Append a node; its outputs keep the first input's channel count unless given."""
        prefix = op.lower()
        outs = [self.name(prefix) for _ in range(outputs)]
        self.nodes.append(
            helper.make_node(
                op, inputs, outs, name=self.name("n_" + prefix), domain=domain, **attrs
            )
        )
        for o in outs:
            self.ch[o] = self.ch.get(inputs[0], 0) if channels is None else channels
        return outs[0] if outputs == 1 else outs

    def conv(
        self,
        x: str,
        cout: int,
        k: int | tuple[int, int] = 3,
        stride: int = 1,
        pad: int | None = None,
        dilation: int = 1,
        group: int = 1,
        bias: bool = True,
        **attrs: object,
    ) -> str:
        """Conv with symmetric pads (default k//2*dilation) unless pads/auto_pad are given."""
        kh, kw = (k, k) if isinstance(k, int) else k
        cin = self.ch[x]
        w = self.const(self.rng.standard_normal((cout, cin // group, kh, kw)).astype(np.float32))
        ins = [x, w]
        if bias:
            ins.append(self.const(self.rng.standard_normal(cout).astype(np.float32), "b"))
        if "pads" not in attrs and "auto_pad" not in attrs:
            ph, pw = (kh // 2 * dilation, kw // 2 * dilation) if pad is None else (pad, pad)
            attrs["pads"] = [ph, pw, ph, pw]
        return self.op(
            "Conv",
            ins,
            cout,
            kernel_shape=[kh, kw],
            strides=[stride, stride],
            dilations=[dilation, dilation],
            group=group,
            **attrs,
        )

    def conv_t(self, x: str, cout: int, k: int, stride: int, **attrs: object) -> str:
        cin = self.ch[x]
        w = self.const(self.rng.standard_normal((cin, cout, k, k)).astype(np.float32))
        return self.op(
            "ConvTranspose", [x, w], cout, kernel_shape=[k, k], strides=[stride, stride], **attrs
        )

    def pool(
        self, x: str, k: int = 2, stride: int = 2, op: str = "MaxPool", **attrs: object
    ) -> str:
        return self.op(op, [x], kernel_shape=[k, k], strides=[stride, stride], **attrs)

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def ints(self, values: list[int]) -> str:
        return self.const(np.array(values, dtype=np.int64), "i")

    def floats(self, values: list[float]) -> str:
        return self.const(np.array(values, dtype=np.float32), "f")

    def resize(self, x: str, scale: float = 2.0, **attrs: object) -> str:
        return self.op("Resize", [x, "", self.floats([1, 1, scale, scale])], **attrs)

    def model(self, outputs: list[str] | None = None) -> onnx.ModelProto:
        """The model; outputs default to the last node's first output."""
        outputs = outputs or [self.nodes[-1].output[0]]
        h, w = self.size
        shape = ["N", self.channels, h, w] if self.layout == "nchw" else ["N", h, w, self.channels]
        graph = helper.make_graph(
            self.nodes,
            "rf_test",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            initializer=self.inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=10
        )
        return model


def vgg16(size: int = 224, width: int = 2) -> tuple[onnx.ModelProto, list[str]]:
    """VGG-16 layer geometry (3x3 pad-1 convs, 2x2 pools) with tiny channel counts."""
    net = Net((size, size))
    x, pools = "x", []
    for convs in (2, 2, 3, 3, 3):
        for _ in range(convs):
            x = net.relu(net.conv(x, width, 3))
        x = net.pool(x, 2, 2)
        pools.append(x)
    return net.model(pools), pools
