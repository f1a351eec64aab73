"""Sample typed results for the client's unit tests (no server needed)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from maxact.client import types as t
from maxact.common.preprocessing import Preprocessing


def png_bytes(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_geometry(size: float, stride: float, padding: float) -> t.FieldGeometry:
    return t.FieldGeometry((size, size), (stride, stride), (padding, padding))


def make_rf(size: float, stride: float, padding: float, *, global_context: bool = False):
    geometry = make_geometry(size, stride, padding)
    group = t.ChannelGroup(0, 7, geometry, ((0, 3), (1, 5)), ((0, 3), (1, 5)))
    return t.ReceptiveField(True, geometry, (group,), global_context, group.rows, group.cols)


def make_hit(rank: int, image: str, score: float) -> t.Hit:
    return t.Hit(rank, image, score, (rank, rank + 1), (0, 1, 10, 11), (0, 0, 8, 8), 3)


@pytest.fixture
def field_info() -> t.FieldInfo:
    geometry = t.FieldGeometry((7.0, 7.0), (2.0, 0.5), (3.0, 1.25))
    group_a = t.ChannelGroup(0, 3, geometry, ((0, 4), (0, 6)), ((0, 5), (0, 5)))
    group_b = t.ChannelGroup(
        4, 7, t.FieldGeometry((5.0, 5.0), (2.0, 0.5), (2.0, 1.0)), ((0, 3),), ((0, 4),)
    )
    rf = t.ReceptiveField(True, geometry, (group_a, group_b), True, ((0, 4), (0, 6)), ((0, 5),))
    return t.FieldInfo("net", "conv/out:0", "x", 32, 32, (8, 16, 64), rf)


@pytest.fixture
def model_info() -> t.ModelInfo:
    layers = (
        t.LayerInfo("x", "", (3, 224, 224), make_rf(1, 1, 0)),
        t.LayerInfo("conv1", "Conv", (16, 112, 112), make_rf(3, 2, 1)),
        t.LayerInfo("p2o.pd_op.hardswish.2.0", "HardSwish", (32, 56, 56), make_rf(35, 4, 16)),
        t.LayerInfo("p2o.pd_op.relu.2.0", "Relu", (32, 56, 56), make_rf(39, 4, 16)),
        t.LayerInfo("p2o.pd_op.hardswish.9.0", "HardSwish", (64, 14, 14), make_rf(155, 16, 70)),
        t.LayerInfo("se.mul", "Mul", (64, 14, 14), make_rf(150, 16, 70, global_context=True)),
        t.LayerInfo("weird", "Resize", (64, 28, 28), None, "unsupported op Resize"),
        t.LayerInfo("fc", "Gemm", (1000,), None, ""),
    )
    return t.ModelInfo(
        "zoo/net",
        (t.TensorInfo("x", "float32", (-1, 3, 224, 224)),),
        (t.TensorInfo("y", "float32", (-1, 1000)),),
        Preprocessing(size=(224, 224), scale=1 / 255),
        224,
        224,
        layers,
    )


@pytest.fixture
def topk_result() -> t.TopKResult:
    patches = (
        t.Patch(make_hit(1, "a/cat.jpg", 12.5), png_bytes(10, 10, (255, 0, 0))),
        t.Patch(make_hit(2, "b/dog.png", 3.0), png_bytes(4, 8, (0, 255, 0))),
    )
    return t.TopKResult(
        "zoo/net", "conv1", 3, 2, "image", False, 40, 1, patches,
        (t.ImageSkipped("bad.jpg", "cannot decode"),),
    )  # fmt: skip
