"""Hypothesis strategies for the fuzz suite: any request message of any maxact RPC (built from
the proto descriptors, so new fields are fuzzed without editing this file), image bytes and
ONNX model bytes, biased towards the names and values that reach deep into the server."""

from __future__ import annotations

import io
from typing import Any

import onnx
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st
from onnx import TensorProto
from PIL import Image

KNOWN_NAMES = ["net", "dyn", "ds", "conv1", "relu1", "pool1", "features", "scans/none"]
HOSTILE_NAMES = [
    "",
    ".hidden",
    "a/../b",
    "../../etc/passwd",
    "/etc/passwd",
    "dir/",
    "a//b",
    "a\x00b",
    "x/" * 300 + "y",
    "a" * 300,
    "é" * 200,
    "\\windows\\path",
    "²",
    "9" * 5000,
]
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
NAMES = st.one_of(st.sampled_from(KNOWN_NAMES + HOSTILE_NAMES), TEXT)

_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _small_image(kind: str, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    mode = "L" if kind == "TIFF" else "RGB"
    Image.new(mode, (width, height), 90).save(buffer, format=kind)
    return buffer.getvalue()


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """Valid small images, their byte-flipped or truncated mutants, and plain noise."""
    kind = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    width = draw(st.integers(1, 96))
    height = draw(st.integers(1, 96))
    data = bytearray(_small_image(kind, width, height))
    how = draw(st.sampled_from(["valid", "flip", "truncate", "noise"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
    elif how == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "noise":
        data = bytearray(draw(st.binary(max_size=4096)))
    return bytes(data)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return NAMES
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=2048), image_bytes())
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)  # proto3 enums are open: unknown numbers arrive too
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        width = 32 if kind == FieldDescriptor.TYPE_FLOAT else 64
        return st.floats(width=width, allow_nan=True, allow_infinity=True)
    low, high = _INT_BOUNDS[kind]
    return st.one_of(st.integers(max(low, -3), min(high, 300)), st.integers(low, high))


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            key = field.message_type.fields_by_name["key"]
            value = field.message_type.fields_by_name["value"]
            return st.dictionaries(_scalar(key), _field(value, depth + 1), max_size=3)
        single = messages(field.message_type, depth + 1)
    else:
        single = _scalar(field)
    if field.is_repeated:
        return st.lists(single, max_size=4)
    return single


def _build(descriptor: Descriptor, values: dict[str, Any]) -> Any:
    message = message_factory.GetMessageClass(descriptor)()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if hasattr(item, "CopyFrom"):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """Any message of `descriptor`'s type; nesting stops at depth 3."""
    if depth > 3:
        return st.just(message_factory.GetMessageClass(descriptor)())
    optional = {f.name: _field(f, depth) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=optional).map(lambda v: _build(descriptor, v))


@st.composite
def model_bytes(draw: st.DrawFn, base: onnx.ModelProto) -> bytes:
    """`base` with its structure mutated (input type and shape, versions, attributes, node
    wiring) or its serialized bytes flipped or truncated."""
    model = onnx.ModelProto()
    model.CopyFrom(base)
    how = draw(st.sampled_from(["structure", "flip", "truncate"]))
    if how == "structure":
        graph_input = model.graph.input[0].type.tensor_type
        for _ in range(draw(st.integers(1, 4))):
            change = draw(
                st.sampled_from(["dtype", "dim", "rank", "ir", "opset", "attribute", "wire", "op"])
            )
            if change == "dtype":
                graph_input.elem_type = draw(st.sampled_from(list(TensorProto.DataType.values())))
            elif change == "dim":
                dims = graph_input.shape.dim
                dim = dims[draw(st.integers(0, len(dims) - 1))]
                if draw(st.booleans()):
                    dim.dim_value = draw(st.integers(-2, 5000))
                else:
                    dim.dim_param = draw(st.sampled_from(["N", "H", "", "é"]))
            elif change == "rank":
                if draw(st.booleans()) and graph_input.shape.dim:
                    del graph_input.shape.dim[-1]
                else:
                    graph_input.shape.dim.add().dim_value = draw(st.integers(0, 8))
            elif change == "ir":
                model.ir_version = draw(st.integers(0, 1000))
            elif change == "opset":
                model.opset_import[0].version = draw(st.integers(0, 1000))
            elif change == "attribute":
                node = model.graph.node[draw(st.integers(0, len(model.graph.node) - 1))]
                if node.attribute:
                    attribute = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
                    if attribute.ints:
                        attribute.ints[0] = draw(st.integers(-3, 70))
            elif change == "wire":
                node = model.graph.node[draw(st.integers(0, len(model.graph.node) - 1))]
                if node.input:
                    node.input[0] = draw(st.sampled_from(["image", "conv1", "missing", ""]))
            else:
                node = model.graph.node[draw(st.integers(0, len(model.graph.node) - 1))]
                node.op_type = draw(
                    st.sampled_from(["Relu", "Conv", "MaxPool", "Identity", "Nope", "Resize"])
                )
        return model.SerializeToString()
    data = bytearray(model.SerializeToString())
    if how == "flip":
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    else:
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)
