"""Branching graphs: residuals, Inception concat, FPN, SE, NHWC, Constant-node weights."""

from __future__ import annotations

import numpy as np

from maxact.server.rf import compute_receptive_fields

from .builders import Net
from .checks import assert_matches_oracle


def test_resnet_like_strided_1x1_shortcut_union_matches_oracle() -> None:
    net = Net((32, 32))
    x = net.relu(net.conv("x", 4, 7, stride=2, pad=3))
    x = net.pool(x, 3, 2, pads=[1, 1, 1, 1])
    for stride in (1, 2, 2):
        y = net.relu(net.conv(x, 4, 3, stride=stride, pad=1))
        y = net.conv(y, 4, 3, pad=1)
        short = net.conv(x, 4, 1, stride=stride, pad=0) if stride > 1 else x
        x = net.relu(net.op("Add", [y, short]))
    assert_matches_oracle(net.model([x]), (32, 32), min_interior=1)


def test_inception_block_concat_gives_channel_groups_with_different_fields() -> None:
    net = Net((24, 24))
    x = net.conv("x", 4, 3, stride=2, pad=1)
    b1 = net.conv(x, 2, 1, pad=0)
    b2 = net.conv(net.conv(x, 2, 1, pad=0), 3, 3)
    b3 = net.conv(net.conv(net.conv(x, 2, 1, pad=0), 2, 3), 2, 3)
    b4 = net.conv(net.pool(x, 3, 1, pads=[1, 1, 1, 1]), 1, 1, pad=0)
    cat = net.op("Concat", [b1, b2, b3, b4], 2 + 3 + 2 + 1, axis=1)
    out = net.conv(cat, 2, 3)
    rf = assert_matches_oracle(net.model([cat, out]), (24, 24), min_interior=4)
    f = rf.field(cat)
    sizes = [(g.first, g.last, int(g.height.size)) for g in f.groups]
    assert sizes == [(0, 1, 3), (2, 4, 7), (5, 6, 11), (7, 7, 7)]
    assert f.geometry()[0].size == 11  # the union over groups
    assert len(rf.field(out).groups) == 1


def test_fpn_top_down_nearest_resize_plus_lateral_add_matches_oracle() -> None:
    net = Net((32, 32), opset=18)
    c2 = net.conv("x", 2, 3, stride=2)
    c3 = net.conv(c2, 2, 3, stride=2)
    c4 = net.conv(c3, 2, 3, stride=2)
    p4 = net.conv(c4, 2, 1, pad=0)
    p3 = net.op("Add", [net.resize(p4, 2.0, mode="nearest"), net.conv(c3, 2, 1, pad=0)])
    up = net.op("Resize", [p3, "", "", net.ints([16, 16])], mode="nearest", axes=[2, 3])
    p2 = net.op("Add", [up, net.conv(c2, 2, 1, pad=0)])
    rf = assert_matches_oracle(net.model([p2]), (32, 32))
    g = rf.field(p2).geometry()[0]
    assert g.stride == 2 and not g.exact


def test_linear_and_nearest_resize_coordinate_modes_match_oracle() -> None:
    modes = [
        ("linear", "half_pixel", "round_prefer_floor", 2.0),
        ("linear", "asymmetric", "round_prefer_floor", 2.0),
        ("linear", "align_corners", "round_prefer_floor", 0),
        ("linear", "pytorch_half_pixel", "round_prefer_floor", 0.5),
        ("nearest", "asymmetric", "floor", 2.0),
        ("nearest", "half_pixel", "round_prefer_ceil", 2.0),
        ("nearest", "tf_half_pixel_for_nn", "round_prefer_floor", 2.0),
        ("nearest", "align_corners", "ceil", 0),
        ("nearest", "half_pixel", "round_prefer_floor", 0.5),
    ]
    for mode, coord, nearest, scale in modes:
        net = Net((16, 16), opset=18)
        x = net.conv("x", 2, 3, stride=2)  # 8x8
        if scale:
            y = net.resize(
                x, scale, mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest
            )
        else:  # 8 -> 15: (8-1)/(15-1) = 1/2 exactly
            sizes = net.ints([15, 15])
            y = net.op(
                "Resize",
                [x, "", "", sizes],
                mode=mode,
                axes=[2, 3],
                coordinate_transformation_mode=coord,
                nearest_mode=nearest,
            )
        z = net.conv(y, 2, 3)
        assert_matches_oracle(net.model([z]), (16, 16))


def test_conv_transpose_decoder_has_fractional_stride_and_exact_boxes() -> None:
    net = Net((16, 16))
    x = net.conv("x", 2, 3, stride=2)
    x = net.conv(x, 2, 3, stride=2)  # 4x4, S=4
    y = net.conv_t(x, 2, 4, 2, pads=[1, 1, 1, 1])  # 8x8
    y = net.conv_t(y, 2, 3, 2, pads=[1, 1, 1, 1], output_padding=[1, 1])  # 16x16
    z = net.conv_t(y, 2, 3, 1, pads=[1, 1, 1, 1])
    w = net.conv_t(x, 2, 3, 2, output_shape=[8, 8], auto_pad="SAME_UPPER")
    v = net.conv_t(x, 2, 4, 2, output_shape=[9, 9])
    u = net.conv_t(x, 2, 3, 3, auto_pad="SAME_LOWER", dilations=[2, 2])
    rf = assert_matches_oracle(net.model([z, w, v, u]), (16, 16))
    assert rf.field(y).geometry()[0].stride == 1
    assert rf.field(z).height == 16


def test_squeeze_excitation_keeps_local_field_and_sets_global_context() -> None:
    net = Net((16, 16))
    x = net.relu(net.conv("x", 4, 3))
    gap = net.op("GlobalAveragePool", [x])
    s = net.op("Sigmoid", [net.conv(net.relu(net.conv(gap, 2, 1, pad=0)), 4, 1, pad=0)])
    gated = net.op("Mul", [x, s])
    out = net.conv(gated, 2, 3)
    rf = assert_matches_oracle(net.model([out]), (16, 16))
    assert rf.field(gated).global_context and rf.field(out).global_context
    assert not rf.field(x).global_context
    assert rf.field(gated).geometry() == rf.field(x).geometry()
    assert not rf.field(gap).spatial and not rf.field(s).spatial


def test_gap_then_gemm_gives_flat_whole_image_tensors() -> None:
    net = Net((16, 16))
    x = net.conv("x", 4, 3, stride=2)
    flat = net.op("Flatten", [net.op("GlobalAveragePool", [x])], axis=1)
    w = net.const(np.ones((4, 5), np.float32))
    logits = net.op("Gemm", [flat, w], 5)
    probs = net.op("Softmax", [logits], axis=1)
    rf = compute_receptive_fields(net.model([probs]), (16, 16))
    f = rf.field(probs)
    assert not f.spatial and f.channels == 5 and f.global_context
    assert f.box(0, 0) == (0, 0, 16, 16)
    assert probs in rf.tensors() and rf.field(x).spatial


def test_nhwc_input_transposed_first_matches_oracle() -> None:
    net = Net((20, 12), layout="nhwc")
    x = net.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    x = net.conv(x, 2, 3, stride=2)
    x = net.pool(x, 2, 2)
    back = net.op("Transpose", [x], perm=[0, 2, 3, 1])
    model = net.model([x, back])
    rf = assert_matches_oracle(model, (20, 12), layout="nhwc")
    assert rf.layout == "nhwc"
    f = rf.field(back)
    assert (f.channel_axis, f.height_axis, f.width_axis) == (3, 1, 2)
    assert (f.height, f.width) == (5, 3)


def test_constant_node_weights_work_like_initializers() -> None:
    boxes = []
    for const in (False, True):
        net = Net((16, 16), const_weights=const)
        x = net.conv(net.conv("x", 2, 5, stride=2), 2, 3, stride=2)
        pads = net.ints([0, 0, 1, 2, 0, 0, 1, 0])
        x = net.op("Pad", [x, pads], mode="reflect")
        rf = assert_matches_oracle(net.model([x]), (16, 16))
        boxes.append(rf.field(x).rows())
    assert boxes[0] == boxes[1]


def test_legacy_upsample_nearest_and_linear_match_oracle() -> None:
    for mode in ("nearest", "linear"):
        net = Net((16, 16), opset=9)
        x = net.conv("x", 2, 3, stride=2)
        y = net.op("Upsample", [x, net.floats([1, 1, 2, 2])], mode=mode)
        rf = assert_matches_oracle(net.model([net.conv(y, 2, 3)]), (16, 16))
        assert rf.field(y).geometry()[0].stride == 1
