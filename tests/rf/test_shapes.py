"""Shape inference with the onnxruntime fallback, and fields on top of it."""

from __future__ import annotations

import numpy as np
import onnx

from maxact.server.graph.shapes import infer_shapes
from maxact.server.rf import compute_receptive_fields

from .builders import Net
from .checks import assert_matches_oracle


def _computed_scales_model() -> tuple[onnx.ModelProto, str]:
    """Resize whose scales are computed from Shape at run time (onnx cannot infer its shape)."""
    net = Net((16, 16))
    x = net.conv("x", 2, 3, stride=2)
    h = net.op(
        "Cast",
        [net.op("Slice", [net.op("Shape", [x]), net.ints([2]), net.ints([3])])],
        to=onnx.TensorProto.FLOAT,
    )
    s = net.op("Div", [h, net.floats([4.0])])  # 8 / 4 = 2
    scales = net.op("Concat", [net.floats([1.0, 1.0]), s, s], axis=0)
    y = net.op("Resize", [x, "", scales], mode="nearest")
    return net.model([net.conv(y, 2, 3)]), y


def test_infer_shapes_falls_back_to_running_the_graph() -> None:
    model, y = _computed_scales_model()
    static = onnx.shape_inference.infer_shapes(model, data_prop=True)
    known = {vi.name for vi in static.graph.value_info if vi.type.tensor_type.shape.dim}
    dims = {vi.name: vi.type.tensor_type.shape.dim for vi in static.graph.value_info}
    assert y not in known or any(not d.HasField("dim_value") for d in dims[y])
    shapes = infer_shapes(model, {"x": (1, 3, 16, 16)})
    assert shapes[y] == (1, 2, 16, 16)
    assert shapes["x"] == (1, 3, 16, 16)


def test_fields_through_computed_resize_scales_match_oracle() -> None:
    model, y = _computed_scales_model()
    rf = assert_matches_oracle(model, (16, 16))
    assert rf.field(y).geometry()[0].stride == 1


def test_dynamic_batch_defaults_to_one_and_given_size_is_used() -> None:
    net = Net((16, 16))
    x = net.conv("x", 2, 3, stride=2)
    model = net.model([x])
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    shapes = infer_shapes(model, {"x": (1, 3, 40, 30)})
    assert shapes[x] == (1, 2, 20, 15)
    rf = compute_receptive_fields(model, (40, 30))
    assert (rf.field(x).height, rf.field(x).width) == (20, 15)
    assert rf.input_name == "x" and rf.layout == "nchw"


def test_grouped_and_depthwise_convs_keep_per_block_groups() -> None:
    net = Net((16, 16))
    a = net.conv("x", 2, 1, pad=0)
    b = net.conv("x", 2, 5)
    cat = net.op("Concat", [a, b], 4, axis=1)
    dw = net.conv(cat, 4, 3, group=4)
    grouped = net.conv(dw, 4, 3, group=2)
    rf = assert_matches_oracle(net.model([grouped]), (16, 16))
    assert [int(g.height.size) for g in rf.field(dw).groups] == [3, 7]
    assert [int(g.height.size) for g in rf.field(grouped).groups] == [5, 9]
    assert np.all(np.array(rf.field(grouped).rows())[:, 1] <= 16)
