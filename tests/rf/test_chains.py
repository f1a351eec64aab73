"""Plain chains: conv/pool geometry, exact border boxes, published VGG-16 numbers."""

from __future__ import annotations

from fractions import Fraction

from maxact.server.rf import compute_receptive_fields

from .builders import Net, vgg16
from .checks import assert_matches_oracle


def test_vgg16_pools_have_published_rf_stride_padding_at_224() -> None:
    model, pools = vgg16(224)
    rf = compute_receptive_fields(model, (224, 224))
    want = [(6, 2, 2), (16, 4, 6), (44, 8, 18), (100, 16, 42), (212, 32, 90)]
    for name, (r, s, p) in zip(pools, want, strict=True):
        for geom in rf.field(name).geometry():
            assert (geom.size, geom.stride, geom.padding) == (r, s, p)


def test_vgg16_boxes_match_oracle_every_unit() -> None:
    model, _ = vgg16(64, width=2)
    assert_matches_oracle(model, (64, 64))


def test_valid_stride4_first_conv_never_reads_last_row_so_border_boxes_shrink() -> None:
    net = Net((34, 34))
    x = net.conv("x", 2, 11, stride=4, pad=0)  # 6 units reading rows 0..30 only
    x = net.conv(x, 2, 3, pad=1)
    rf = assert_matches_oracle(net.model([x]), (34, 34))
    f = rf.field(x)
    assert f.box_unclipped(5, 0)[2] == 35  # the formula box, clipped once, would end at 34
    assert f.box(5, 0)[2] == 31  # rows 31..33 never reach any unit
    assert f.box_unclipped(0, 0)[0] < 0 and f.box(0, 0)[0] == 0


def test_dilated_chain_boxes_match_oracle() -> None:
    net = Net((40, 40))
    x = net.relu(net.conv("x", 2, 3, dilation=2))
    x = net.conv(x, 2, 3, dilation=4)
    x = net.pool(x, 3, 1, pads=[2, 2, 2, 2], dilations=[2, 2])
    rf = assert_matches_oracle(net.model([x]), (40, 40), min_interior=1)
    assert rf.field(x).geometry()[0].size == 1 + 4 + 8 + 4


def test_same_padding_upper_lower_and_asymmetric_pads_for_even_and_odd_sizes() -> None:
    for size in (32, 33):
        net = Net((size, size))
        a = net.conv("x", 2, 3, stride=2, auto_pad="SAME_UPPER", pads=None)
        b = net.conv(a, 2, 4, stride=2, auto_pad="SAME_LOWER")
        c = net.pool(b, 3, 2, auto_pad="SAME_UPPER")
        d = net.conv(c, 2, 3, pads=[0, 1, 2, 0])
        e = net.pool(d, 2, 1, op="AveragePool", pads=[1, 0, 0, 1])
        assert_matches_oracle(net.model([e]), (size, size))


def test_ceil_mode_pools_keep_partial_windows_exact() -> None:
    net = Net((31, 31))
    x = net.pool("x", 3, 2, ceil_mode=1)
    x = net.conv(x, 2, 3)
    x = net.pool(x, 2, 2, op="AveragePool", ceil_mode=1)
    x = net.pool(x, 3, 2, op="LpPool", pads=[1, 1, 1, 1])
    assert_matches_oracle(net.model([x]), (31, 31))


def test_geometry_is_exact_rational_and_flags_exactness() -> None:
    model, pools = vgg16(64)
    g = compute_receptive_fields(model, (64, 64)).field(pools[0]).geometry()[0]
    assert isinstance(g.stride, Fraction) and g.exact


def test_alexnet_like_valid_11x11_stride4_at_224_never_reads_row_223() -> None:
    net = Net((224, 224))
    c1 = net.relu(net.conv("x", 2, 11, stride=4, pad=0))  # 54x54, reads rows 0..222
    p1 = net.pool(c1, 3, 2)  # 26x26
    c2 = net.conv(p1, 2, 5, pad=2)
    rf = assert_matches_oracle(net.model([c2]), (224, 224))
    assert rf.field(c1).rows()[-1] == (212, 223)  # row 223 is never read
    f = rf.field(c2)  # the 3x2 pool drops c1's last unit too: rows 219.. never reach c2
    assert max(hi for _, hi in f.rows()) == 219 and max(hi for _, hi in f.cols()) == 219
    assert f.box_unclipped(f.height - 1, 0)[2] > 224
