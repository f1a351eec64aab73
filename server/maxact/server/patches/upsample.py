"""The RF-centre-preserving upsampling of a unit map to model-input pixels (heatmap, mask).

Unit i's value sits at its field's centre pixel i*S - P + (R-1)/2, bilinear between centres,
constant beyond the outer centres. Split into the two separable stages so that the mask can
evaluate any subset of rows and columns with per-pixel identical values: every tap and weight
is computed per coordinate.
"""

from __future__ import annotations

import numpy as np

from maxact.server.rf import AxisGeometry

# (low unit, high unit, weight of high) per model-input pixel coordinate of one axis
Taps = tuple[np.ndarray, np.ndarray, np.ndarray]


def taps(axis: AxisGeometry, units: int, coords: np.ndarray) -> Taps:
    """(low unit, high unit, weight of high) per model-input pixel coordinate in `coords`:
    bilinear between unit centres, unit i's value sitting at its field's centre pixel
    i*S - P + (R-1)/2 (constant beyond the ends)."""
    first_centre = float(-axis.padding + (axis.size - 1) / 2)
    position = np.clip((coords - first_centre) / float(axis.stride), 0.0, units - 1.0)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, units - 1)
    return low, high, position - low


def blend_rows(grid: np.ndarray, rows: Taps) -> np.ndarray:
    """The first stage: [len(rows), W'] in grid's dtype."""
    low, high, weight = rows
    w = weight.astype(grid.dtype)[:, None]
    return np.asarray(grid[low] * (1.0 - w) + grid[high] * w)


def blend_cols(rows: np.ndarray, cols: Taps) -> np.ndarray:
    """The second stage: [len(rows), len(cols)] in rows' dtype."""
    low, high, weight = cols
    w = weight.astype(rows.dtype)
    return np.asarray(rows[:, low] * (1.0 - w) + rows[:, high] * w)


def upsample(
    channel_map: np.ndarray,
    axes: tuple[AxisGeometry, AxisGeometry],
    ys: np.ndarray,
    xs: np.ndarray,
    dtype: type[np.floating] = np.float64,
) -> np.ndarray:
    """The map's values at model-input pixel coordinates ys x xs (RF-centre-preserving), in
    `dtype`.

    Two taps per axis, gathered: a mask of a 736 x 1000 input needs ~3M multiply-adds this
    way, not the dense [pixels, units] weight products (and no BLAS threads, which spin
    against onnxruntime's on a busy server)."""
    height, width = channel_map.shape
    grid = channel_map.astype(dtype, copy=False)
    return blend_cols(blend_rows(grid, taps(axes[0], height, ys)), taps(axes[1], width, xs))


def blend_blocks(rows: np.ndarray, ys: np.ndarray, xs: np.ndarray, cols: Taps) -> np.ndarray:
    """`blend_cols(rows, cols)[ys, xs]` of K blocks, rows ys [K, h, 1] x columns xs [K, 1, w],
    the columns of a block sharing one low (so one high) tap: the same arithmetic on the same
    float32 operands, so the same values (a tap's value is gathered once per block row)."""
    low, high, weight = cols
    w = weight.astype(rows.dtype)[xs]
    tap = xs[:, :, :1]
    return np.asarray(rows[ys, low[tap]] * (1.0 - w) + rows[ys, high[tap]] * w)
