"""The mask of the upsampled map without upsampling all of it (the `mask` render's hot path).

A "cell" is the block of model-input pixels that share one low tap per axis (`upsample.taps`:
the rows between two neighbouring unit centres x the columns between two). Every pixel of a
cell is a bilinear combination of the cell's 4 corner units, so it lies within their
[min, max], widened by `margin` for float32 rounding:

    In float32 (unit roundoff u = 2^-24, A = max |map|) one stage computes
    fl(fl(a * fl(1 - f)) + fl(b * f)) with f in [0, 1]: fl(1 - f) is off by <= u, each product
    by <= u |a| (1 + u), the sum by <= u (2A)(1 + 2u); the exact a (1 - f) + b f lies in
    [min(a, b), max(a, b)]. So a stage moves its result at most ~4uA (+ O(u^2)) outside the
    corners' range, and both stages at most ~8.2uA; with subnormal products each rounding may
    add up to 2^-149 absolute. `margin` = 2^-16 A + 2^-120 is over 30x that.

The mask's threshold is the needed-th largest pixel (`above_quantile`). Cells sorted by their
lower bound, descending: where their pixel count first reaches `needed`, that lower bound L is
a lower bound of the threshold, so only cells whose upper bound is >= L can hold a pixel >= the
threshold. Those (a band of rows x the candidate cells' columns at a time) are upsampled with
the same formula as the full map, per-pixel identical values: their needed-th largest IS the
threshold, and every mask pixel is among them. When that leaves too many pixels (a ReLU map
whose quantile falls on 0) the caller upsamples the whole map as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from maxact.server.patches.upsample import Taps, blend_cols, blend_rows, taps
from maxact.server.rf import AxisGeometry

MARGIN = 2.0**-16  # of max |map|: the float32 rounding allowance of the cell bounds
TINY = 2.0**-120  # ... plus this absolute one (subnormal products)
MAX_SHARE = 0.5  # evaluating more than this share of the pixels: the full map is as cheap
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Cells:
    """The cells of one axis: runs of consecutive pixels sharing one low tap."""

    starts: np.ndarray  # first pixel of each cell
    counts: np.ndarray  # pixels per cell
    low: np.ndarray  # the cell's low unit
    high: np.ndarray  # ... and high unit

    @classmethod
    def of(cls, axis_taps: Taps) -> _Cells:
        low, high, _ = axis_taps
        starts = np.flatnonzero(np.diff(low, prepend=-1))
        counts = np.diff(np.append(starts, low.size))
        return cls(starts, counts, low[starts], high[starts])

    def box(self, first: int, last: int) -> tuple[int, int]:
        """Pixels [start, stop) of cells first..last."""
        return int(self.starts[first]), int(self.starts[last] + self.counts[last])


@dataclass(frozen=True)
class CellMask:
    """The whole mask and the cells that may hold mask pixels."""

    mask: np.ndarray  # [H, W] bool
    hot: np.ndarray  # [cells_y, cells_x] bool: upper bound >= the threshold
    rows: _Cells
    cols: _Cells

    def window(self, seed: tuple[int, int]) -> Box:
        """Pixels holding the seed's whole 8-connected region: neighbouring pixels lie in the
        same or neighbouring cells, so the region lies within the bounding box of the
        8-connected hot cells around the seed's cell."""
        labels, _ = ndimage.label(self.hot, structure=EIGHT_CONNECTED)
        cell_y = int(np.searchsorted(self.rows.starts, seed[0], side="right")) - 1
        cell_x = int(np.searchsorted(self.cols.starts, seed[1], side="right")) - 1
        ys, xs = np.nonzero(labels == labels[cell_y, cell_x])
        y0, y1 = self.rows.box(int(ys.min()), int(ys.max()))
        x0, x1 = self.cols.box(int(xs.min()), int(xs.max()))
        return y0, x0, y1, x1


def cell_mask(
    channel_map: np.ndarray,
    axes: tuple[AxisGeometry, AxisGeometry],
    size: tuple[int, int],
    quantile: float,
) -> CellMask | None:
    """The mask `above_quantile(upsample(map to `size`, float32), quantile)` would give,
    upsampling only the cells that can hold its pixels; None when they are over MAX_SHARE of
    the input (or the map is not finite): then the whole map is the cheaper way."""
    grid = channel_map.astype(np.float32, copy=False)
    if grid.size == 0 or not np.isfinite(grid).all():
        return None
    height, width = size
    total = height * width
    needed = total - math.floor(quantile * (total - 1))
    row_taps = taps(axes[0], grid.shape[0], np.arange(height, dtype=np.float64))
    col_taps = taps(axes[1], grid.shape[1], np.arange(width, dtype=np.float64))
    rows, cols = _Cells.of(row_taps), _Cells.of(col_taps)
    low, high = _bounds(grid, rows, cols)
    counts = rows.counts[:, None] * cols.counts[None, :]
    order = np.argsort(-low, axis=None, kind="stable")
    reached = int(np.searchsorted(np.cumsum(counts.ravel()[order]), needed))
    candidate = high >= low.ravel()[order[reached]]
    if int(counts[candidate].sum()) > MAX_SHARE * total:
        return None
    blended = blend_rows(grid, row_taps)  # [H, W']: cheap next to [H, W]
    bands = []
    for i in np.flatnonzero(candidate.any(axis=1)):
        xs = np.flatnonzero(np.repeat(candidate[i], cols.counts))
        y0, y1 = rows.box(int(i), int(i))
        values = blend_cols(blended[y0:y1], (col_taps[0][xs], col_taps[1][xs], col_taps[2][xs]))
        bands.append((y0, y1, xs, values))
    flat = np.concatenate([values.ravel() for *_, values in bands])
    pick = flat.size - needed
    threshold = np.partition(flat, pick)[pick]
    strict = bool((flat > threshold).any())  # else the top values tie: >= (above_quantile)
    mask = np.zeros(size, dtype=bool)
    for y0, y1, xs, values in bands:
        mask[y0:y1, xs] = values > threshold if strict else values >= threshold
    return CellMask(mask, high >= float(threshold), rows, cols)


def _bounds(grid: np.ndarray, rows: _Cells, cols: _Cells) -> tuple[np.ndarray, np.ndarray]:
    """[cells_y, cells_x] float64 lower and upper bounds of every cell's upsampled pixels."""
    top, bottom = grid[rows.low], grid[rows.high]
    corners = np.stack(
        [top[:, cols.low], top[:, cols.high], bottom[:, cols.low], bottom[:, cols.high]]
    )
    margin = MARGIN * float(np.abs(grid).max()) + TINY
    low = corners.min(axis=0).astype(np.float64) - margin
    high = corners.max(axis=0).astype(np.float64) + margin
    return low, high
