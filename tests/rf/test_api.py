"""The public records: boxes, union over groups, axes, flat tensors, ordering."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from maxact.server.rf import AxisGeometry, compute_receptive_fields

from .builders import Net
from .checks import assert_matches_oracle


def _two_group_model() -> tuple[Net, str, str]:
    net = Net((20, 20))
    a = net.conv("x", 2, 1, pad=0)
    b = net.conv("x", 3, 5, stride=1)
    cat = net.op("Concat", [a, b], 5, axis=1)
    return net, cat, b


def test_box_per_channel_and_union_and_unclipped_formula_box() -> None:
    net, cat, _ = _two_group_model()
    f = compute_receptive_fields(net.model([cat]), (20, 20)).field(cat)
    assert f.group_of(0).last == 1 and f.group_of(4).first == 2
    assert f.box(5, 6, channel=0) == (5, 6, 6, 7)
    assert f.box(5, 6, channel=3) == (3, 4, 8, 9)
    assert f.box(5, 6) == (3, 4, 8, 9)  # union over groups
    assert f.box(0, 0) == (0, 0, 3, 3)  # clipped
    assert f.box_unclipped(0, 0) == (-2.0, -2.0, 3.0, 3.0)
    assert f.box_unclipped(0, 0, channel=0) == (0.0, 0.0, 1.0, 1.0)
    gh, _ = f.geometry()
    assert gh == AxisGeometry(Fraction(5), Fraction(1), Fraction(2))
    with pytest.raises(IndexError):
        f.group_of(5)
    with pytest.raises(IndexError):
        f.box(20, 0)


def test_rows_are_the_union_of_group_rows_per_unit() -> None:
    net, cat, b = _two_group_model()
    rf = compute_receptive_fields(net.model([cat]), (20, 20))
    f = rf.field(cat)
    assert f.rows() == rf.field(b).rows() and f.cols() == rf.field(b).cols()
    assert len(f.rows()) == f.height == 20


def test_tensors_are_listed_in_topological_order_input_first() -> None:
    net = Net((8, 8))
    a = net.conv("x", 2, 3)
    b = net.relu(a)
    rf = compute_receptive_fields(net.model([b]), (8, 8))
    names = rf.tensors()
    assert names[0] == "x" and names.index(a) < names.index(b)
    assert rf.field("x").box(3, 4) == (3, 4, 4, 5)


def test_nhwc_pointwise_matmul_stays_local() -> None:
    net = Net((12, 12), layout="nhwc")
    x = net.op("MatMul", ["x", net.const(np.ones((3, 4), np.float32))], 4)
    y = net.op("Transpose", [x], 4, perm=[0, 3, 1, 2])
    z = net.conv(y, 2, 3, stride=2)
    rf = assert_matches_oracle(net.model([z]), (12, 12), layout="nhwc")
    assert rf.field(x).spatial and rf.field(x).channel_axis == 3
    assert rf.field(z).geometry()[0].size == 3


def test_flat_tensor_of_rank_four_reports_channel_axis_one() -> None:
    net = Net((8, 8))
    gap = net.op("GlobalAveragePool", [net.conv("x", 6, 3)])
    f = compute_receptive_fields(net.model([gap]), (8, 8)).field(gap)
    assert not f.spatial and f.channels == 6 and f.channel_axis == 1
    assert (f.height, f.width, f.height_axis, f.width_axis) == (1, 1, 2, 3)
    assert f.box(0, 0, channel=5) == (0, 0, 8, 8)
