"""The fast mask box (render.above_quantile, render.component_box) selects exactly what its
definition does: the pixels above np.quantile of the upsampled map, and the bounding box of
the 8-connected region holding the seed labelled over the whole map."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from maxact.server.patches.render import EIGHT_CONNECTED, above_quantile, component_box


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
