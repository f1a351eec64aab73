"""The mask of the upsampled map without upsampling all of it (the `mask` render's hot path).

A "block" is a rectangle of model-input pixels sharing one low tap per axis (`upsample.taps`):
the rows between two neighbouring unit centres x at most BLOCK_COLS of the columns between two.
Over a block the upsampled map is bilinear in the two weights, which grow with the pixel
index, so its extremes over the block are at its 4 corner pixels. Their float64 values widened
by `margin` bound every pixel the float32 `upsample` gives in the block:

    In float32 (unit roundoff u = 2^-24, A = max |map|) one stage computes
    fl(fl(a * fl(1 - f)) + fl(b * f)) with f in [0, 1]: fl(1 - f) is off by <= u, each product
    by <= u A (1 + u), their sum by <= u A (1 + 3u); the exact a (1 - f) + b f lies in
    [min(a, b), max(a, b)]. So a stage adds at most ~4uA, both ~8.2uA (+ O(u^2)). The weight
    f itself is rounded to float32 (the value moves by <= 2A u per axis) and the float64
    corners are off by ~1e-16 A: under 13uA in all, plus up to 2^-149 per subnormal rounding.
    `margin` = 2^-16 A + 2^-120 (256uA) is far above that.

The mask's threshold is the needed-th largest pixel (`above_quantile`). It is at most U, the
lowest upper bound among the highest blocks holding `needed` pixels. The highest blocks
holding twice that many are upsampled first: their needed-th largest value E is a lower bound
of the threshold, so only blocks whose upper bound is >= E can hold a pixel >= the threshold.
Those are upsampled too, a row band of blocks at a time, with the same formula as the whole
map (per-pixel identical values: every tap is computed per coordinate): the needed-th largest
of everything upsampled IS the threshold, and every mask pixel is among them. When the blocks
up to U or E hold over MAX_SHARE of the pixels (a constant map, a ReLU map whose quantile
falls on 0) the caller upsamples the whole map as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from maxact.server.patches.upsample import Taps, blend_cols, blend_rows, taps, upsample
from maxact.server.rf import AxisGeometry

BLOCK_COLS = 16  # columns per block at most: tighter bounds than whole cells
# rows per block at most: whole cells keep the row bands (a few numpy calls each) few
BLOCK_ROWS = 64
MARGIN = 2.0**-16  # of max |map|: the float32 rounding allowance of the block bounds
TINY = 2.0**-120  # ... plus this absolute one (subnormal products)
FIRST = 1.5  # upsample first the highest blocks holding this many times `needed` pixels
MAX_SHARE = 0.5  # upsampling more than this share of the pixels: the whole map is as cheap
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
Box = tuple[int, int, int, int]
# a row band of upsampled blocks: rows y0:y1, columns xs, their values (or mask)
Band = tuple[int, int, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _Blocks:
    """The blocks of one axis: runs of at most `block` consecutive pixels with one low tap."""

    starts: np.ndarray  # first pixel of each block
    counts: np.ndarray  # pixels per block

    @classmethod
    def of(cls, axis_taps: Taps, block: int) -> _Blocks:
        low = axis_taps[0]
        cell = np.flatnonzero(np.diff(low, prepend=-1))  # first pixel of each low tap's run
        run = np.arange(low.size) - np.repeat(cell, np.diff(np.append(cell, low.size)))
        starts = np.flatnonzero(run % block == 0)
        return cls(starts, np.diff(np.append(starts, low.size)))

    @property
    def ends(self) -> np.ndarray:
        """Last pixel of each block."""
        return np.asarray(self.starts + self.counts - 1)

    def span(self, first: int, last: int) -> tuple[int, int]:
        """Pixels [start, stop) of blocks first..last."""
        return int(self.starts[first]), int(self.starts[last] + self.counts[last])

    def of_pixel(self, pixel: int) -> int:
        return int(np.searchsorted(self.starts, pixel, side="right")) - 1


@dataclass(frozen=True)
class CellMask:
    """The whole mask and the blocks that may hold mask pixels."""

    mask: np.ndarray  # [H, W] bool
    bands: list[Band]  # where mask pixels can be: the upsampled bands, their masks
    hot: np.ndarray  # [blocks_y, blocks_x] bool: upper bound >= the threshold
    rows: _Blocks
    cols: _Blocks

    def nearest(self, seed: tuple[int, int]) -> tuple[int, int]:
        """The mask pixel nearest to `seed`, the first in row-major order among equals (as
        argmin over np.nonzero of the whole mask picks it); bands by their row distance,
        until no closer pixel can follow."""
        best, ys, xs = math.inf, np.empty(0, np.int64), np.empty(0, np.int64)

        def gap(band: Band) -> int:
            return max(0, band[0] - seed[0], seed[0] - band[1] + 1)

        for band in sorted(self.bands, key=gap):
            if gap(band) ** 2 > best:
                break
            y0, _, cols, mask = band
            r, c = np.nonzero(mask)
            distance = (y0 + r - seed[0]) ** 2 + (cols[c] - seed[1]) ** 2
            if distance.size and distance.min() <= best:
                closest = distance == distance.min()
                if distance.min() < best:
                    best, ys, xs = distance.min(), ys[:0], xs[:0]
                ys = np.concatenate([ys, y0 + r[closest]])
                xs = np.concatenate([xs, cols[c[closest]]])
        first = int(np.argmin(ys * self.mask.shape[1] + xs))
        return int(ys[first]), int(xs[first])

    def window(self, seed: tuple[int, int]) -> Box:
        """Pixels holding the seed's whole 8-connected region: neighbouring pixels lie in the
        same or neighbouring blocks, so the region lies within the bounding box of the
        8-connected hot blocks around the seed's block."""
        labels, _ = ndimage.label(self.hot, structure=EIGHT_CONNECTED)
        region = labels == labels[self.rows.of_pixel(seed[0]), self.cols.of_pixel(seed[1])]
        ys, xs = np.nonzero(region)
        y0, y1 = self.rows.span(int(ys.min()), int(ys.max()))
        x0, x1 = self.cols.span(int(xs.min()), int(xs.max()))
        return y0, x0, y1, x1


def cell_mask(
    channel_map: np.ndarray,
    axes: tuple[AxisGeometry, AxisGeometry],
    size: tuple[int, int],
    quantile: float,
) -> CellMask | None:
    """The mask `above_quantile(upsample(map to `size`, float32), quantile)` would give,
    upsampling only the blocks that can hold its pixels; None when they are over MAX_SHARE of
    the input (or the map is not finite): then the whole map is the cheaper way."""
    grid = channel_map.astype(np.float32, copy=False)
    if grid.size == 0 or not np.isfinite(grid).all():
        return None
    total = size[0] * size[1]
    needed = total - math.floor(quantile * (total - 1))
    row_taps = taps(axes[0], grid.shape[0], np.arange(size[0], dtype=np.float64))
    col_taps = taps(axes[1], grid.shape[1], np.arange(size[1], dtype=np.float64))
    rows, cols = _Blocks.of(row_taps, BLOCK_ROWS), _Blocks.of(col_taps, BLOCK_COLS)
    high = _upper_bounds(grid, axes, rows, cols)
    counts = rows.counts[:, None] * cols.counts[None, :]
    # the highest blocks holding `needed` pixels: the threshold is at most their lowest upper
    # bound, so every block up there is a candidate; too many: nothing to prune
    order = np.argsort(-high, axis=None)
    reach = np.cumsum(counts.ravel()[order])
    if int(counts[high >= high.ravel()[order[np.searchsorted(reach, needed)]]].sum()) > (
        MAX_SHARE * total
    ):
        return None
    # a few times more: their needed-th largest is closer to the threshold
    more = min(total, math.ceil(FIRST * needed))
    top = np.zeros(high.shape, dtype=bool)
    top.ravel()[order[: int(np.searchsorted(reach, more)) + 1]] = True
    blended = blend_rows(grid, row_taps)  # [H, W']: cheap next to [H, W]
    bands = _upsample_blocks(blended, col_taps, rows, cols, top)
    values = np.concatenate([band[3].ravel() for band in bands])
    floor = _largest(values, needed)  # a lower bound of the threshold
    candidate = high >= float(floor)
    if int(counts[candidate].sum()) > MAX_SHARE * total:
        return None
    more_bands = _upsample_blocks(blended, col_taps, rows, cols, candidate & ~top)
    bands += more_bands
    # the values below the bound cannot be the threshold
    values = np.concatenate([values[values >= floor]] + [b[3][b[3] >= floor] for b in more_bands])
    threshold = _largest(values, needed)
    strict = bool((values > threshold).any())  # else the top values tie: >= (above_quantile)
    mask = np.zeros(size, dtype=bool)
    masks: list[Band] = []
    for y0, y1, xs, band in bands:
        selected = band > threshold if strict else band >= threshold
        if selected.any():
            mask[y0:y1, xs] = selected
            masks.append((y0, y1, xs, selected))
    return CellMask(mask, masks, high >= float(threshold), rows, cols)


def _largest(values: np.ndarray, rank: int) -> np.floating:
    """The rank-th largest of `values` (1 <= rank <= size).

    np.partition slows down ~10x on long runs of equal values (a ReLU map's zeros): only the
    values above a bound from a 1/16 sample are partitioned, unless too few are above it."""
    sample = np.sort(values[::16])
    bound = sample[max(0, sample.size - 1 - (2 * rank * sample.size) // values.size)]
    above = values[values > bound]
    if above.size >= rank:
        return np.partition(above, above.size - rank)[above.size - rank]  # type: ignore[no-any-return]
    rank -= above.size + int(np.count_nonzero(values == bound))
    if rank <= 0:
        return bound  # type: ignore[no-any-return]
    below = values[values < bound]
    return np.partition(below, below.size - rank)[below.size - rank]  # type: ignore[no-any-return]


def _upper_bounds(
    grid: np.ndarray, axes: tuple[AxisGeometry, AxisGeometry], rows: _Blocks, cols: _Blocks
) -> np.ndarray:
    """[blocks_y, blocks_x] float64 upper bounds of every block's upsampled pixels: the
    largest of its 4 corner pixels plus the margin."""
    ys = np.stack([rows.starts, rows.ends], axis=1).ravel().astype(np.float64)
    xs = np.stack([cols.starts, cols.ends], axis=1).ravel().astype(np.float64)
    corners = upsample(grid, axes, ys, xs, np.float64)  # [2 blocks_y, 2 blocks_x]
    top, bottom = np.maximum(corners[0::2, 0::2], corners[0::2, 1::2]), corners[1::2]
    highest = np.maximum(top, np.maximum(bottom[:, 0::2], bottom[:, 1::2]))
    return np.asarray(highest + (MARGIN * float(np.abs(grid).max()) + TINY))


def _upsample_blocks(
    blended: np.ndarray, col_taps: Taps, rows: _Blocks, cols: _Blocks, chosen: np.ndarray
) -> list[Band]:
    """The chosen blocks upsampled, a row band of blocks at a time (second stage only)."""
    bands = []
    for i in np.flatnonzero(chosen.any(axis=1)):
        xs = np.flatnonzero(np.repeat(chosen[i], cols.counts))
        y0, y1 = rows.span(int(i), int(i))
        band = blend_cols(blended[y0:y1], (col_taps[0][xs], col_taps[1][xs], col_taps[2][xs]))
        bands.append((y0, y1, xs, band))
    return bands
