"""Shared pieces of the robustness tests: a dynamic-size model, tiny PNGs, and the error check."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client import MaxactError
from tests.onnx_models import finish


def dynamic_model(
    elem_type: int = TensorProto.FLOAT, channels: int | str = 3, name: str = "image"
) -> onnx.ModelProto:
    """conv1 (3x3) -> relu1 on an input with dynamic height and width ([N, C, H, W])."""
    in_channels = channels if isinstance(channels, int) else 3
    weights = np.full((2, in_channels, 3, 3), 1.0 / (9 * in_channels), dtype=np.float32)
    nodes = [
        helper.make_node("Cast", [name], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["as_float", "w1"], ["conv1"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic",
        [helper.make_tensor_value_info(name, elem_type, ["N", channels, "H", "W"])],
        [helper.make_tensor_value_info("relu1", TensorProto.FLOAT, ["N", 2, None, None])],
        initializer=[numpy_helper.from_array(weights, "w1")],
    )
    return finish(graph)


def png_bytes(width: int, height: int, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def refused(call: Callable[[], Any], code: grpc.StatusCode, reason: str = "") -> MaxactError:
    """Run `call`, expect a MaxactError with `code` (and `reason`); return it."""
    with pytest.raises(MaxactError) as caught:
        call()
    error = caught.value
    assert error.code == code, str(error)
    if reason:
        assert error.reason == reason, str(error)
    return error


def assert_no_server_path(text: str, *roots: Path) -> None:
    for root in roots:
        assert str(root) not in text, text
        assert str(root.resolve()) not in text, text


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder nothing can be created in: a read-only one, or for root (who writes through
    file modes) a folder of /proc."""
    if os.geteuid() == 0:
        return Path("/proc/sys/fs/mqueue")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return folder
