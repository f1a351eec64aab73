"""What a scan can feed a model, checked when the model is loaded (not at first use).

The scan feeds float32 RGB images: an image input of another element type or channel count,
an IR version or operator set newer than the installed runtime reads, or external data that is
missing or shorter than its tensors would otherwise load fine and fail later as INTERNAL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from onnx import TensorProto, helper, numpy_helper

from maxact.common.kinds import Layout
from maxact.server.graph.surgery import ImageInput

DEFAULT_DOMAINS = ("", "ai.onnx")


def unsupported_input(proto: onnx.ModelProto, model_input: ImageInput) -> str | None:
    """Why the scan cannot feed this model (None: it can)."""
    if model_input.elem_type != TensorProto.FLOAT:
        type_name = TensorProto.DataType.Name(model_input.elem_type).lower()
        return (
            f"its image input {model_input.name!r} takes {type_name}; maxact feeds float32 "
            "images (export the model with a float32 input)"
        )
    channel_axis = 1 if model_input.layout == Layout.NCHW else 3
    channels = model_input.shape[channel_axis]
    if channels is not None and channels != 3:
        return (
            f"its image input {model_input.name!r} has {channels} channel(s); maxact feeds "
            "3-channel (RGB) images"
        )
    if proto.ir_version > onnx.IR_VERSION:
        return (
            f"its IR version {proto.ir_version} is newer than this runtime reads "
            f"(up to {onnx.IR_VERSION})"
        )
    newest = onnx.defs.onnx_opset_version()
    for opset in proto.opset_import:
        if opset.domain in DEFAULT_DOMAINS and opset.version > newest:
            return f"its opset {opset.version} is newer than this runtime supports (up to {newest})"
    return None


def external_data_problem(tensors: list[onnx.TensorProto], folder: Path) -> str | None:
    """Why the external data of `tensors` (already inside `folder`) cannot be loaded."""
    from onnx.external_data_helper import ExternalDataInfo

    for tensor in tensors:
        info = ExternalDataInfo(tensor)
        target = folder / info.location
        if not target.is_file():
            return f"external data {info.location!r} of tensor {tensor.name!r} is missing"
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, ValueError):
            continue  # strings and exotic types: the runtime checks them
        needed = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
        if info.length and info.length < needed:
            return (
                f"external data of tensor {tensor.name!r} declares {info.length} bytes, "
                f"needs {needed}"
            )
        available = target.stat().st_size - (info.offset or 0)
        if available < needed:
            return (
                f"external data {info.location!r} is truncated: tensor {tensor.name!r} needs "
                f"{needed} bytes, {max(available, 0)} are there"
            )
    return None


def tensor_problem(tensors: list[onnx.TensorProto]) -> str | None:
    """Why one of `tensors` (initializers, Constant values) does not hold the data its shape
    and type declare: such a file would load, then fail deep inside at first use."""
    for tensor in tensors:
        if tensor.data_location == TensorProto.EXTERNAL:
            continue
        if any(dim < 0 for dim in tensor.dims):
            return f"tensor {tensor.name!r} has a negative dimension {list(tensor.dims)}"
        count = int(np.prod(tensor.dims, dtype=np.int64))
        if tensor.HasField("raw_data"):
            try:
                itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            except (KeyError, ValueError, TypeError):
                return f"tensor {tensor.name!r} has an unknown data type {tensor.data_type}"
            if len(tensor.raw_data) != count * itemsize:
                return (
                    f"tensor {tensor.name!r} holds {len(tensor.raw_data)} bytes, its shape "
                    f"{list(tensor.dims)} and type need {count * itemsize}"
                )
            continue
        try:
            array = numpy_helper.to_array(tensor)
        except Exception as exc:  # any decoding failure is a damaged tensor
            return f"tensor {tensor.name!r} cannot be read ({type(exc).__name__})"
        if array.size != count:
            return f"tensor {tensor.name!r} does not match its shape {list(tensor.dims)}"
    return None


def text_problem(message: Message) -> str | None:
    """ONNX files are proto2, whose strings are not checked for UTF-8 when parsed: protobuf
    hands invalid ones over as bytes, which fail deep inside at first use. Look at each once."""
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                found = text_problem(item)
                if found is not None:
                    return found
        elif field.type == FieldDescriptor.TYPE_STRING:
            items = value if field.is_repeated else [value]
            if any(not isinstance(item, str) for item in items):
                return f"a string in its {field.name!r} field is not valid UTF-8"
    return None
