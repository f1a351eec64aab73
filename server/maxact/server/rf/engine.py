"""Receptive fields of every tensor of an ONNX model, computed once in topological order."""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import onnx

from maxact.common.kinds import Layout
from maxact.server.graph.shapes import graph_inputs, infer_shapes
from maxact.server.graph.surgery import detect_layout
from maxact.server.rf import ops_layout, ops_resample, ops_tokens, ops_window
from maxact.server.rf.axis import identity_axis
from maxact.server.rf.constants import Constants
from maxact.server.rf.context import Context
from maxact.server.rf.errors import FieldError
from maxact.server.rf.fields import AxisGeometry, ChannelGroupField, TensorField, TokenGrid
from maxact.server.rf.state import (
    CONST,
    FLAT,
    Const,
    Failed,
    Flat,
    Group,
    Handler,
    Spatial,
    State,
    Tokens,
    Unsupported,
)

log = logging.getLogger(__name__)

_UNARY = [
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
    "Mish",
    "Softplus",
    "Softsign",
    "ThresholdedRelu",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Abs",
    "Reciprocal",
    "Pow",
    "Erf",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "Sin",
    "Cos",
    "Not",
    "IsNaN",
    "IsInf",
    "BatchNormalization",
    "InstanceNormalization",
    "MeanVarianceNormalization",
    "GroupNormalization",
    "Identity",
    "Cast",
    "CastLike",
    "Dropout",
    "Shrink",
    "QuantizeLinear",
    "DequantizeLinear",
    "Add",
    "Mul",
    "Sub",
    "Div",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Where",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "BitShift",
    "Mod",
    "Expand",
]

_REDUCTIONS = [
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceSum",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "ArgMax",
    "ArgMin",
]

_SHAPE_ONLY = ["Shape", "Size", "RandomNormalLike", "RandomUniformLike", "EyeLike"]

HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(_UNARY, ops_layout.elementwise),
    "Conv": ops_window.conv,
    "ConvTranspose": ops_window.conv_transpose,
    **dict.fromkeys(["MaxPool", "AveragePool", "LpPool"], ops_window.pool),
    "Pad": ops_resample.pad,
    **dict.fromkeys(["Resize", "Upsample"], ops_resample.resize),
    "Slice": ops_resample.slice_op,
    "Split": ops_resample.split,
    "DepthToSpace": ops_resample.depth_to_space,
    "SpaceToDepth": ops_resample.space_to_depth,
    "Concat": ops_layout.concat,
    "Transpose": ops_layout.transpose,
    **dict.fromkeys(["Reshape", "Flatten", "Squeeze", "Unsqueeze"], ops_layout.reshape),
    **dict.fromkeys(_REDUCTIONS, ops_layout.reduce),
    **dict.fromkeys(["Softmax", "LogSoftmax", "Hardmax"], ops_layout.softmax),
    "MatMul": ops_layout.matmul,
    "LRN": ops_layout.lrn,
    **dict.fromkeys(
        ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Gemm"],
        lambda c, n, i: [FLAT] * len(n.output),
    ),
    **dict.fromkeys(_SHAPE_ONLY, ops_layout.constant_of_image),
}

# Handlers of ops with a token-sequence input, by (domain, op type)
TOKEN_HANDLERS = ops_tokens.handlers(_UNARY, _REDUCTIONS)


def _handler(node: onnx.NodeProto, ins: list[State]) -> Handler | None:
    """The handler of `node` for these inputs (None: the op cannot be traced)."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    if any(isinstance(s, Tokens) for s in ins) and node.op_type not in _SHAPE_ONLY:
        return TOKEN_HANDLERS.get((domain, node.op_type))
    return HANDLERS.get(node.op_type) if domain == "" else None


def image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The first real (non-initializer) graph input of rank 4."""
    for vi in graph_inputs(model):
        if len(vi.type.tensor_type.shape.dim) == 4:
            return vi
    raise ValueError("the model has no 4-D image input")


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in dependency order (ONNX requires it, but not every exporter complies)."""
    produced = {o for n in graph.node for o in n.output}
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    pending, order = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(not i or i in ready or i not in produced for i in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            order += rest  # a cycle: keep going, those nodes fail on missing inputs
            break
        pending = rest
    return order


class ReceptiveFields:
    """All fields of one model for one concrete input size, computed once at load time."""

    def __init__(
        self,
        model: onnx.ModelProto,
        input_size: tuple[int, int],
        input_name: str | None = None,
        shapes: dict[str, tuple[int, ...]] | None = None,
    ) -> None:
        vi = (
            next((v for v in graph_inputs(model) if v.name == input_name), None)
            if input_name
            else image_input(model)
        )
        if vi is None:
            raise ValueError(f"no graph input named {input_name!r}")
        dims = [d.dim_value if d.dim_value > 0 else 0 for d in vi.type.tensor_type.shape.dim]
        if len(dims) != 4:
            raise ValueError(f"image input {vi.name!r} must be 4-D, has rank {len(dims)}")
        self.input_name = vi.name
        self.input_height, self.input_width = int(input_size[0]), int(input_size[1])
        self.layout = detect_layout(dims)
        c_axis, h_axis, w_axis = (1, 2, 3) if self.layout == Layout.NCHW else (3, 1, 2)
        channels = dims[c_axis] or 3
        shape = [1, 0, 0, 0]
        shape[c_axis], shape[h_axis], shape[w_axis] = channels, *input_size
        if shapes is None:
            shapes = infer_shapes(model, {self.input_name: tuple(shape)})
        self._shapes = shapes
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        ctx = Context(shapes, Constants(model.graph, shapes), opset)
        start = Group(
            0, channels - 1, identity_axis(self.input_height), identity_axis(self.input_width)
        )
        self._states: dict[str, State] = {
            self.input_name: Spatial(4, c_axis, h_axis, w_axis, channels, (start,))
        }
        self._order = [self.input_name]
        for node in _topological(model.graph):
            self._visit(ctx, node)
        self._cache: dict[str, TensorField] = {}

    def _visit(self, ctx: Context, node: onnx.NodeProto) -> None:
        ins = [self._states.get(i, CONST) if i else CONST for i in node.input]
        failed = ops_layout.passthrough_failed(ins)
        outs: list[State]
        if failed is not None:
            outs = [failed] * len(node.output)
        elif all(isinstance(s, Const) for s in ins):
            outs = [CONST] * len(node.output)
        else:
            handler = _handler(node, ins)
            reason = None
            try:
                if handler is None:
                    raise Unsupported("")
                outs = handler(ctx, node, ins)
            except Unsupported as exc:
                reason = str(exc)
            except Exception as exc:  # a malformed node must not take the whole model down
                log.warning(
                    "receptive field of node %r (%s) failed: %r", node.name, node.op_type, exc
                )
                reason = f"internal error: {exc!r}"
            if reason is not None:
                outs = [Failed(reason, node.op_type, node.name, node.output[0])] * len(node.output)
        for name, state in zip(node.output, outs, strict=False):
            if name:
                self._states[name] = state
                if isinstance(state, Spatial | Flat) or (
                    isinstance(state, Tokens) and state.batch == 0
                ):
                    self._order.append(name)

    def tensors(self) -> list[str]:
        """Every tensor with a spatial or flat field, in topological order (input first)."""
        return list(self._order)

    def failed(self) -> dict[str, FieldError]:
        """Image-dependent tensors whose field cannot be derived, with the reason."""
        return {
            name: self._error(name, s) for name, s in self._states.items() if isinstance(s, Failed)
        }

    @staticmethod
    def _error(tensor: str, s: Failed) -> FieldError:
        where = f"node {s.node!r}, output {s.output!r}" if s.node else f"output {s.output!r}"
        msg = f"receptive field of {tensor!r} depends on op {s.op!r} ({where})"
        msg += f": {s.reason}" if s.reason else " which maxact cannot trace"
        return FieldError(msg, s.op, tensor)

    def field(self, tensor: str) -> TensorField:
        """The field of `tensor`; FieldError when it cannot be derived, KeyError if unknown."""
        if tensor in self._cache:
            return self._cache[tensor]
        state = self._states.get(tensor)
        if state is None:
            raise KeyError(f"no tensor named {tensor!r}")
        if isinstance(state, Failed):
            raise self._error(tensor, state)
        if isinstance(state, Const):
            raise KeyError(f"tensor {tensor!r} does not depend on the image")
        if isinstance(state, Tokens) and state.batch != 0:
            raise FieldError(
                f"{tensor!r} is a token sequence whose batch axis is not first", "", tensor
            )
        if isinstance(state, Spatial):
            result = self._spatial(tensor, state)
        elif isinstance(state, Tokens):
            result = self._tokens(tensor, state)
        else:
            result = self._flat(tensor)
        self._cache[tensor] = result
        return result

    def _spatial(self, tensor: str, s: Spatial) -> TensorField:
        g0 = s.groups[0]
        groups = tuple(
            ChannelGroupField(g.first, g.last, g.h.geom, g.w.geom, g.h.intervals(), g.w.intervals())
            for g in s.groups
        )
        return TensorField(
            tensor=tensor,
            spatial=True,
            channels=s.channels,
            height=g0.h.length,
            width=g0.w.length,
            channel_axis=s.c_axis,
            height_axis=s.h_axis,
            width_axis=s.w_axis,
            groups=groups,
            global_context=s.global_context,
            input_height=self.input_height,
            input_width=self.input_width,
        )

    def _tokens(self, tensor: str, s: Tokens) -> TensorField:
        """A token sequence seen as its grid: axes of the [N, H, W, C] view `TokenGrid.view`."""
        rows, cols = s.h.intervals(), s.w.intervals()
        group = ChannelGroupField(0, s.channels - 1, s.h.geom, s.w.geom, rows, cols)
        height, width = s.grid
        return TensorField(
            tensor=tensor,
            spatial=True,
            channels=s.channels,
            height=height,
            width=width,
            channel_axis=3,
            height_axis=1,
            width_axis=2,
            groups=(group,),
            global_context=s.global_context,
            input_height=self.input_height,
            input_width=self.input_width,
            tokens=TokenGrid(s.rank, s.axis, s.prefix, height, width),
        )

    def _flat(self, tensor: str) -> TensorField:
        """Whole-image field; channels = features (the product of the non-batch dims)."""
        shape = self._shapes.get(tensor, (1, 1))
        features = math.prod(shape[1:]) if len(shape) > 1 else 1
        big = [k for k in range(1, len(shape)) if shape[k] > 1]
        c_axis = big[0] if len(big) == 1 else 1
        hw = (2, 3) if len(shape) == 4 and shape[2] == shape[3] == 1 else (-1, -1)
        H, W = self.input_height, self.input_width
        gh = AxisGeometry(Fraction(H), Fraction(1), Fraction(0))
        gw = AxisGeometry(Fraction(W), Fraction(1), Fraction(0))
        group = ChannelGroupField(0, max(features - 1, 0), gh, gw, ((0, H),), ((0, W),))
        return TensorField(
            tensor, False, features, 1, 1, c_axis, hw[0], hw[1], (group,), True, H, W
        )


def compute_receptive_fields(
    model: onnx.ModelProto,
    input_size: tuple[int, int],
    input_name: str | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> ReceptiveFields:
    """Fields of every tensor of `model` for an image of `input_size` (height, width)."""
    return ReceptiveFields(model, input_size, input_name, shapes)
