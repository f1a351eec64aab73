"""The layer catalogue and the receptive-field engine read the image input's layout alike."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from maxact.server.graph.surgery import image_input
from maxact.server.rf import compute_receptive_fields
from tests.onnx_models import finish


@pytest.mark.parametrize(
    ("dims", "layout"),
    [
        (["N", 3, 32, 32], "nchw"),
        (["N", 32, 32, 3], "nhwc"),
        (["N", 32, 32, 8], "nhwc"),  # 8 channels last: the smaller known dim is C
        (["N", 8, 32, 32], "nchw"),
    ],
)
def test_catalogue_and_field_engine_agree_on_the_input_layout(dims: list, layout: str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["image"], ["out"])],
        "layout",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)],
    )
    model = finish(graph)
    assert image_input(model).layout == layout
    assert compute_receptive_fields(model, (32, 32), input_name="image").layout == layout
