"""The fast mask box (render.above_quantile, render.component_box, and mask_cells, which
upsamples only the blocks that can hold mask pixels) selects exactly what its definition does:
the pixels above np.quantile of the whole upsampled map, and the bounding box of the
8-connected region holding the seed labelled over the whole map."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import ndimage

from maxact.server.patches import mask_cells
from maxact.server.patches.mask_cells import EIGHT_CONNECTED
from maxact.server.patches.render import (
    PatchTarget,
    above_quantile,
    component_box,
    mask_box,
)
from maxact.server.patches.upsample import upsample
from maxact.server.rf import AxisGeometry
from maxact.server.rf.fields import ChannelGroupField, TensorField


def _maps(count: int) -> list[np.ndarray]:
    """Random maps of three kinds: continuous, few distinct values, ReLU-like (many zeros)."""
    rng = np.random.default_rng(7)
    maps = []
    for i in range(count):
        shape = tuple(int(n) for n in rng.integers(1, 90, 2))
        kind = i % 3
        if kind == 0:
            maps.append(rng.random(shape))
        elif kind == 1:
            maps.append(rng.integers(0, 4, shape).astype(np.float32))
        else:
            maps.append(np.maximum(rng.normal(-1, 1, shape), 0).astype(np.float32))
    return maps


def test_above_quantile_selects_the_pixels_above_numpys_quantile() -> None:
    rng = np.random.default_rng(3)
    for values in _maps(600):
        quantile = float(rng.uniform(0.01, 0.999))
        threshold = np.quantile(values, quantile)
        expected = values > threshold
        if not expected.any():
            expected = values >= threshold
        assert (above_quantile(values, quantile) == expected).all()


def test_component_box_equals_labelling_the_whole_mask() -> None:
    rng = np.random.default_rng(5)
    for values in _maps(600):
        mask = values > np.quantile(values, float(rng.uniform(0.2, 0.9)))
        ys, xs = np.nonzero(mask)
        if not len(ys):
            continue
        pick = int(rng.integers(len(ys)))
        seed = (int(ys[pick]), int(xs[pick]))
        labels, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
        rows, cols = np.nonzero(labels == labels[seed])
        expected = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        half = int(rng.integers(1, 10))  # small windows: the growth path is exercised
        assert component_box(mask, seed, half=half) == tuple(int(v) for v in expected)


def _target(
    shape: tuple[int, int], axes: tuple[AxisGeometry, AxisGeometry], unit: tuple[int, int]
) -> PatchTarget:
    group = ChannelGroupField(0, 0, axes[0], axes[1], (), ())
    field = TensorField("t", True, 1, *shape, 1, 2, 3, (group,), False, 0, 0)
    return PatchTarget((0, 0, 0, 0), unit, 0, field)


def _reference_box(
    channel_map: np.ndarray, target: PatchTarget, size: tuple[int, int], quantile: float
) -> tuple[int, int, int, int]:
    """The mask box as its definition computes it: the whole map upsampled to the input in
    float32, np.quantile's threshold (>= when nothing is above), the whole mask labelled."""
    axes = target.axes()
    up = upsample(channel_map, axes, np.arange(size[0]), np.arange(size[1]), np.float32)
    threshold = np.quantile(up, quantile)
    mask = up > threshold
    if not mask.any():
        mask = up >= threshold
    centre = [
        math.floor(float(u * a.stride - a.padding + (a.size - 1) / 2) + 0.5)
        for u, a in zip(target.unit, axes, strict=True)
    ]
    seed = (min(max(centre[0], 0), size[0] - 1), min(max(centre[1], 0), size[1] - 1))
    if not mask[seed]:
        ys, xs = np.nonzero(mask)
        nearest = int(np.argmin((ys - seed[0]) ** 2 + (xs - seed[1]) ** 2))
        seed = (int(ys[nearest]), int(xs[nearest]))
    labels, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
    rows, cols = np.nonzero(labels == labels[seed])
    return (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)


def _random_map(rng: np.random.Generator, kind: int) -> np.ndarray:
    shape = (int(rng.integers(1, 61)), int(rng.integers(1, 81)))
    if rng.random() < 0.3:
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    if kind == 0:  # continuous, smooth like a conv's map
        return np.asarray(ndimage.gaussian_filter(rng.normal(0, 1, shape), rng.uniform(0, 3)))
    if kind == 1:  # few distinct values: ties at the threshold
        return rng.integers(0, 4, shape).astype(np.float32)
    if kind == 2:  # ReLU-like, sparse
        return np.maximum(rng.normal(-rng.uniform(0.5, 3), 1, shape), 0).astype(np.float32)
    if kind == 3:
        return np.full(shape, rng.normal(), dtype=np.float32)
    return -rng.random(shape) * 10.0 ** rng.integers(-3, 4)  # negative, any scale


def _random_axis(rng: np.random.Generator) -> AxisGeometry:
    stride = Fraction(int(rng.choice([1, 2, 3, 4, 8, 16, 32])))
    if rng.random() < 0.2:
        stride = Fraction(int(rng.integers(1, 8)), int(rng.integers(1, 5)))
    size = Fraction(int(rng.integers(1, 700)))
    padding = Fraction(int(rng.integers(-5, int(size) + 5)))
    return AxisGeometry(size, stride, padding)


@pytest.mark.parametrize("max_share", [mask_cells.MAX_SHARE, 1.0])
def test_mask_box_with_pruned_cells_equals_the_full_upsampled_mask_box(
    max_share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1.0: every case takes the pruned path (none falls back to the whole map)."""
    monkeypatch.setattr(mask_cells, "MAX_SHARE", max_share)
    rng = np.random.default_rng(11)
    pruned = 0
    for case in range(500):
        channel_map = _random_map(rng, case % 5)
        axes = (_random_axis(rng), _random_axis(rng))
        size = (int(rng.integers(1, 301)), int(rng.integers(1, 301)))
        if rng.random() < 0.5:  # the input the map came from
            size = tuple(  # type: ignore[assignment]
                max(1, min(300, int(n * a.stride)))
                for n, a in zip(channel_map.shape, axes, strict=True)
            )
        quantile = float(rng.choice([0.5, 0.9, 0.95, 0.95, 0.99, 0.999, rng.uniform(0.5, 0.999)]))
        unit = (int(rng.integers(channel_map.shape[0])), int(rng.integers(channel_map.shape[1])))
        target = _target(channel_map.shape, axes, unit)
        expected = _reference_box(channel_map, target, size, quantile)
        assert mask_box(channel_map, target, size, quantile) == expected, (case, size, axes)
        pruned += mask_cells.cell_mask(channel_map, axes, size, quantile) is not None
    assert pruned == 500 if max_share == 1.0 else pruned > 50


def test_largest_equals_the_rank_th_of_the_sorted_values() -> None:
    """All three ways: a partition above the sample's bound, the bound itself (long runs of
    equal values: a ReLU map's zeros), a partition below it."""
    rng = np.random.default_rng(13)
    for case in range(300):
        size = int(rng.integers(1, 3000))
        if case % 3 == 0:
            values = rng.random(size).astype(np.float32)
        elif case % 3 == 1:
            values = np.maximum(rng.normal(-2, 1, size), 0).astype(np.float32)
        else:
            values = rng.integers(0, 3, size).astype(np.float32)
        rank = int(rng.integers(1, size + 1))
        assert mask_cells._largest(values, rank) == np.sort(values)[size - rank]
