"""Single ops against the oracle: Pad, Slice, Split, Depth/SpaceToDepth, LRN, Concat, norms."""

from __future__ import annotations

import numpy as np
import pytest

from maxact.server.rf import FieldError, compute_receptive_fields

from .builders import Net
from .checks import assert_matches_oracle


def test_pad_constant_edge_reflect_with_initializer_and_constant_node_pads() -> None:
    for mode in ("constant", "edge", "reflect"):
        for as_node in (False, True):
            net = Net((16, 16))
            x = net.conv("x", 2, 3, stride=2, pad=0)  # 7x7
            pads = net.const(np.array([0, 0, 2, 1, 0, 0, 1, 3]), "pads", as_node=as_node)
            ins = [x, pads] + ([net.floats([5.0])] if mode == "constant" else [])
            y = net.op("Pad", ins, mode=mode)
            z = net.conv(y, 2, 3, pad=0)
            rf = assert_matches_oracle(net.model([z]), (16, 16))
            f = rf.field(y)
            assert f.height == 7 + 3 and f.width == 7 + 4
            if mode == "constant":
                assert f.box(0, 2) == (0, 0, 0, 0)  # a padded unit: no pixel reaches it
            else:
                assert f.box(0, 2)[2] > 0


def test_pad_negative_crops_like_slice() -> None:
    net = Net((16, 16))
    x = net.conv("x", 2, 3)
    y = net.op("Pad", [x, net.ints([0, 0, -2, -1, 0, 0, -3, 0])])
    assert_matches_oracle(net.model([net.conv(y, 2, 3)]), (16, 16))


def test_slice_spatial_crop_stride_and_channel_range() -> None:
    net = Net((20, 20))
    x = net.conv("x", 6, 3)
    crop = net.op("Slice", [x, net.ints([2, 1]), net.ints([-3, 100]), net.ints([2, 3])])
    strided = net.op("Slice", [crop, net.ints([1]), net.ints([16]), net.ints([3]), net.ints([3])])
    chans = net.op("Slice", [strided, net.ints([1]), net.ints([4]), net.ints([1])], 3)
    rf = assert_matches_oracle(net.model([chans]), (20, 20))
    f = rf.field(chans)
    assert (f.channels, f.height, f.width) == (3, 15, 5)
    assert f.geometry()[1].stride == 3


def test_split_on_channels_and_on_height() -> None:
    net = Net((16, 16), opset=13)
    x = net.conv("x", 4, 3, stride=2)
    a, b = net.op("Split", [x, net.ints([1, 3])], outputs=2, axis=1)
    net.ch[a], net.ch[b] = 1, 3
    top, bottom = net.op("Split", [b, net.ints([3, 5])], outputs=2, axis=2)
    rf = assert_matches_oracle(net.model([a, net.conv(top, 2, 3), bottom]), (16, 16))
    assert rf.field(a).channels == 1 and rf.field(bottom).height == 5
    assert rf.field(bottom).box(0, 0)[0] == rf.field(x).box(3, 0)[0]


def test_depth_to_space_and_space_to_depth_match_oracle() -> None:
    for mode in ("DCR", "CRD"):
        net = Net((16, 16))
        x = net.conv("x", 8, 3, stride=2)  # 8 ch, 8x8
        d2s = net.op("DepthToSpace", [x], 2, blocksize=2, mode=mode)  # 2 ch, 16x16
        s2d = net.op("SpaceToDepth", [net.conv(d2s, 2, 3)], 8, blocksize=2)
        rf = assert_matches_oracle(net.model([net.conv(s2d, 2, 1, pad=0)]), (16, 16))
        assert rf.field(d2s).geometry()[0].stride == 1
        assert len(rf.field(s2d).groups) == 4  # one per (dy, dx) phase


def test_lrn_mixes_neighbouring_channel_groups_only() -> None:
    net = Net((12, 12))
    a = net.conv("x", 3, 1, pad=0)
    b = net.conv("x", 3, 5)
    cat = net.op("Concat", [a, b], 6, axis=1)
    y = net.op("LRN", [cat], size=3)
    rf = assert_matches_oracle(net.model([y]), (12, 12))
    sizes = [(g.first, g.last, int(g.height.size)) for g in rf.field(y).groups]
    assert sizes == [(0, 1, 1), (2, 3, 5), (4, 5, 5)]


def test_elementwise_channel_broadcast_and_constants_keep_fields() -> None:
    net = Net((12, 12))
    x = net.conv("x", 4, 3)
    one = net.conv("x", 1, 5)
    y = net.op("Add", [x, one])  # [N,1,H,W] broadcast over channels
    y = net.op("Mul", [y, net.floats([0.5])])
    y = net.op("Clip", [y, net.const(np.float32(0.0))])
    bn = net.op("BatchNormalization", [y, *(net.floats([1] * 4) for _ in "abcd")])
    y = net.op("HardSwish", [bn])
    rf = assert_matches_oracle(net.model([y]), (12, 12))
    assert rf.field(y).geometry()[0].size == 5


def test_instance_norm_and_spatial_softmax_set_global_context() -> None:
    net = Net((12, 12))
    x = net.conv("x", 2, 3)
    inorm = net.op("InstanceNormalization", [x, net.floats([1, 1]), net.floats([0, 0])])
    sm = net.op("Softmax", [net.op("Reshape", [x, net.ints([0, 2, -1])])], axis=2)
    rf = compute_receptive_fields(net.model([inorm, sm]), (12, 12))
    assert rf.field(inorm).global_context and rf.field(inorm).spatial
    # merging H and W makes a token grid; softmax over it mixes the tokens: global context,
    # each token keeping its unit's field
    assert rf.field(sm).tokens is not None and rf.field(sm).global_context
    assert rf.field(sm).box(5, 6) == rf.field(x).box(5, 6)


def test_concat_on_height_stacks_unit_intervals() -> None:
    net = Net((16, 16), opset=13)
    a = net.conv("x", 2, 3, stride=2)
    top, bottom = net.op("Split", [a, net.ints([3, 5])], outputs=2, axis=2)
    cat = net.op("Concat", [bottom, top], 2, axis=2)
    rf = assert_matches_oracle(net.model([cat]), (16, 16))
    assert rf.field(cat).height == 8 and not rf.field(cat).geometry()[0].exact
    assert rf.field(cat).box(0, 0)[0] == rf.field(a).box(3, 0)[0]


def test_concat_on_height_of_parts_with_different_widths_fields_is_refused() -> None:
    net = Net((16, 16))
    a = net.conv("x", 2, 3, stride=2)
    b = net.conv("x", 2, 5, stride=2)
    cat = net.op("Concat", [a, b], 2, axis=2)
    rf = compute_receptive_fields(net.model([cat]), (16, 16))
    with pytest.raises(FieldError) as err:
        rf.field(cat)
    assert err.value.op == "Concat" and err.value.tensor == cat


def test_softmax_and_reduce_over_channels_merge_groups_reduce_over_space_is_flat() -> None:
    net = Net((12, 12))
    a = net.conv("x", 2, 1, pad=0)
    b = net.conv("x", 2, 3)
    cat = net.op("Concat", [a, b], 4, axis=1)
    sm = net.op("Softmax", [cat], axis=1)
    mean_c = net.op("ReduceMean", [cat], 1, axes=[1], keepdims=1)
    max_hw = net.op("ReduceMax", [cat], axes=[2, 3], keepdims=1)
    rf = assert_matches_oracle(net.model([sm, mean_c, max_hw]), (12, 12))
    assert len(rf.field(cat).groups) == 2
    assert len(rf.field(sm).groups) == 1 and rf.field(sm).geometry()[0].size == 3
    assert rf.field(mean_c).channels == 1 and not rf.field(sm).global_context
    assert not rf.field(max_hw).spatial
