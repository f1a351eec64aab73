"""The mask of the upsampled map without upsampling all of it (the `mask` render's hot path).

A "block" is a rectangle of at most BLOCK x BLOCK model-input pixels sharing one low tap per
axis (`upsample.taps`: between two neighbouring unit centres per axis). Over a block the
upsampled map is bilinear in the two weights, which grow with the pixel index, so its extremes
over the block are at its 4 corner pixels. Their values (float32 `upsample`, as the whole map
has them) widened by `margin` bound every pixel of the block:

    In float32 (unit roundoff u = 2^-24, A = max |map|) one stage computes
    fl(fl(a * fl(1 - f)) + fl(b * f)) with f in [0, 1]: fl(1 - f) is off by <= u, each product
    by <= u A (1 + u), their sum by <= u A (1 + 3u); the exact a (1 - f) + b f lies in
    [min(a, b), max(a, b)]. So a stage adds at most ~4uA, both ~8.2uA (+ O(u^2)) to the exact
    bilinear value at the pixel's float32 weights; rounding the weights to float32 keeps
    their order (a pixel's weights stay between its block's corners'). So a pixel exceeds
    its block's largest corner pixel by at most ~16.4uA, plus up to 2^-149 per subnormal
    rounding: `margin` = 2^-16 A + 2^-120 (256uA) is far above that.

The mask's threshold is the needed-th largest pixel (`above_quantile`). It is at most U, the
k-th highest upper bound (k blocks of at most the largest block's pixels hold `needed`), so
every block up to U can hold mask pixels: if those are over MAX_SHARE of the input (a
constant map, a ReLU map whose quantile falls on 0) nothing can be pruned and the caller
upsamples the whole map as before. Else the highest blocks holding FIRST x `needed` pixels
are upsampled: their needed-th largest value E is a lower bound of the threshold, so only
blocks whose upper bound is >= E can hold a pixel >= the threshold; those are upsampled too.
Always with the same formula as the whole map, per-pixel identical values (`blend_blocks`;
every tap is computed per coordinate): the needed-th largest of everything upsampled IS the
threshold, and every mask pixel is among them. The seed's region, the nearest mask pixel and
the region's window come from those blocks too: no [H, W] array is made.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from maxact.server.patches.upsample import Taps, blend_blocks, blend_cols, blend_rows, taps
from maxact.server.rf import AxisGeometry

BLOCK = 8  # pixels per block side at most: tighter bounds than whole cells
MARGIN = 2.0**-16  # of max |map|: the float32 rounding allowance of the block bounds
TINY = 2.0**-120  # ... plus this absolute one (subnormal products)
FIRST = 1.5  # upsample first the highest blocks holding this many times `needed` pixels
MAX_SHARE = 0.5  # upsampling more than this share of the pixels: the whole map is as cheap
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
Box = tuple[int, int, int, int]
# upsampled blocks of one shape: rows [K, h, 1], columns [K, 1, w], values (or mask) [K, h, w]
Piece = tuple[np.ndarray, np.ndarray, np.ndarray]


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
class _Layout:
    """What only the geometry decides: the same for every patch of a layer at one input size."""

    row_taps: Taps  # of every input row
    col_taps: Taps
    rows: _Blocks
    cols: _Blocks
    corner_rows: Taps  # of each block's first and last row, in turn
    corner_cols: Taps


@functools.lru_cache(maxsize=16)
def _layout(
    axes: tuple[AxisGeometry, AxisGeometry], units: tuple[int, int], size: tuple[int, int]
) -> _Layout:
    """Shared by every call through the cache: all its arrays are read-only."""
    row_taps = taps(axes[0], units[0], np.arange(size[0], dtype=np.float64))
    col_taps = taps(axes[1], units[1], np.arange(size[1], dtype=np.float64))
    rows, cols = _Blocks.of(row_taps, BLOCK), _Blocks.of(col_taps, BLOCK)
    ends = [np.stack([b.starts, b.ends], axis=1).ravel() for b in (rows, cols)]
    corner_rows = (row_taps[0][ends[0]], row_taps[1][ends[0]], row_taps[2][ends[0]])
    corner_cols = (col_taps[0][ends[1]], col_taps[1][ends[1]], col_taps[2][ends[1]])
    layout = _Layout(row_taps, col_taps, rows, cols, corner_rows, corner_cols)
    for array in (*row_taps, *col_taps, *corner_rows, *corner_cols, rows.starts, rows.counts):
        array.flags.writeable = False
    cols.starts.flags.writeable = cols.counts.flags.writeable = False
    return layout


@dataclass(frozen=True)
class CellMask:
    """The mask as the upsampled blocks that may hold its pixels (never the whole input)."""

    pieces: list[Piece]  # rows, columns, in the mask
    hot: np.ndarray  # [blocks_y, blocks_x] bool: upper bound >= the threshold (all upsampled)
    rows: _Blocks
    cols: _Blocks
    width: int  # of the input

    def holds(self, pixel: tuple[int, int]) -> bool:
        """Whether `pixel` is in the mask (its block upsampled, else not hot: not in it)."""
        y0 = self.rows.starts[self.rows.of_pixel(pixel[0])]
        x0 = self.cols.starts[self.cols.of_pixel(pixel[1])]
        for ys, xs, inside in self.pieces:
            (block,) = np.nonzero((ys[:, 0, 0] == y0) & (xs[:, 0, 0] == x0))
            if block.size:
                return bool(inside[block[0], pixel[0] - y0, pixel[1] - x0])
        return False  # not upsampled: not hot

    def nearest(self, seed: tuple[int, int]) -> tuple[int, int]:
        """The mask pixel nearest to `seed`, the first in row-major order among equals (as
        argmin over np.nonzero of the whole mask picks it). Only the blocks that can be as
        near as the nearest block's farthest pixel are searched."""
        blocks, bound = [], math.inf
        for ys, xs, inside in self.pieces:
            some = inside.reshape(len(inside), -1).any(axis=1)
            if some.any():
                ys, xs, inside = ys[some], xs[some], inside[some]
                first_y, last_y = ys[:, 0, 0], ys[:, -1, 0]
                first_x, last_x = xs[:, 0, 0], xs[:, 0, -1]
                near = _squared(first_y, last_y, seed[0], False)
                near += _squared(first_x, last_x, seed[1], False)
                far = _squared(first_y, last_y, seed[0], True)
                far += _squared(first_x, last_x, seed[1], True)
                bound = min(bound, int(far.min()))
                blocks.append((ys, xs, inside, near))
        found_y, found_x = [], []
        for ys, xs, inside, near in blocks:
            keep = near <= bound
            chosen = inside[keep]
            found_y.append(np.broadcast_to(ys[keep], chosen.shape)[chosen])
            found_x.append(np.broadcast_to(xs[keep], chosen.shape)[chosen])
        ys, xs = np.concatenate(found_y), np.concatenate(found_x)
        distance = (ys - seed[0]) ** 2 + (xs - seed[1]) ** 2
        closest = np.flatnonzero(distance == distance.min())
        first = closest[np.argmin(ys[closest] * self.width + xs[closest])]
        return int(ys[first]), int(xs[first])

    def mask_in(self, window: Box) -> np.ndarray:
        """The mask over `window` (whole blocks, as `window` gives)."""
        y0, x0, y1, x1 = window
        out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for ys, xs, inside in self.pieces:
            top, left = ys[:, 0, 0], xs[:, 0, 0]
            keep = (top >= y0) & (top < y1) & (left >= x0) & (left < x1)
            if keep.any():
                out[ys[keep] - y0, xs[keep] - x0] = inside[keep]
        return out

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


def _squared(first: np.ndarray, last: np.ndarray, at: int, farthest: bool) -> np.ndarray:
    """Squared distance along one axis from `at` to the nearest (or farthest) of the pixels
    first..last of each block."""
    if farthest:
        gap = np.maximum(np.abs(first - at), np.abs(last - at))
    else:
        gap = np.maximum(0, np.maximum(first - at, at - last))
    return np.asarray(gap * gap)


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
    layout = _layout(axes, (int(grid.shape[0]), int(grid.shape[1])), size)
    row_taps, col_taps, rows, cols = layout.row_taps, layout.col_taps, layout.rows, layout.cols
    high = _upper_bounds(grid, layout)
    counts = rows.counts[:, None] * cols.counts[None, :]
    # U: the k-th highest upper bound, k = needed / the largest block's pixels; the needed-th
    # largest pixel is at most U, so the blocks up to U all are candidates: too many, no pruning
    flat = high.ravel()
    k = math.ceil(needed / int(counts.max()))
    if int(counts[high >= np.partition(flat, flat.size - k)[flat.size - k]].sum()) > (
        MAX_SHARE * total
    ):
        return None
    top = _top_blocks(flat, counts.ravel(), min(total, math.ceil(FIRST * needed)))
    top = top.reshape(high.shape)
    blended = blend_rows(grid, row_taps)  # [H, W']: cheap next to [H, W]
    pieces = _upsample_blocks(blended, col_taps, rows, cols, top)
    values = np.concatenate([piece[2].ravel() for piece in pieces])
    floor = _largest(values, needed)  # a lower bound of the threshold
    candidate = high >= float(floor)
    if int(counts[candidate].sum()) > MAX_SHARE * total:
        return None
    more = _upsample_blocks(blended, col_taps, rows, cols, candidate & ~top)
    pieces += more
    # the values below the bound cannot be the threshold
    values = np.concatenate([values[values >= floor]] + [p[2][p[2] >= floor] for p in more])
    threshold = _largest(values, needed)
    strict = bool((values > threshold).any())  # else the top values tie: >= (above_quantile)
    masks = [
        (ys, xs, piece > threshold if strict else piece >= threshold) for ys, xs, piece in pieces
    ]
    return CellMask(masks, high >= float(threshold), rows, cols, size[1])


def _top_blocks(high: np.ndarray, counts: np.ndarray, pixels: int) -> np.ndarray:
    """The highest blocks (flat) holding at least `pixels` pixels, as a mask: a sort of the
    few highest, not of all blocks."""
    take = min(high.size, 2 * math.ceil(pixels / counts.mean()))
    while True:
        few = np.argpartition(-high, take - 1)[:take] if take < high.size else np.arange(take)
        order = few[np.argsort(-high[few])]
        reach = np.cumsum(counts[order])
        if reach[-1] >= pixels:
            chosen = np.zeros(high.size, dtype=bool)
            chosen[order[: int(np.searchsorted(reach, pixels)) + 1]] = True
            return chosen
        take = min(high.size, 2 * take)


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


def _upper_bounds(grid: np.ndarray, layout: _Layout) -> np.ndarray:
    """[blocks_y, blocks_x] float64 upper bounds of every block's upsampled pixels: the
    largest of its 4 corner pixels plus the margin (module docstring)."""
    corners = blend_cols(blend_rows(grid, layout.corner_rows), layout.corner_cols)  # upsample
    top, bottom = np.maximum(corners[0::2, 0::2], corners[0::2, 1::2]), corners[1::2]
    highest = np.maximum(top, np.maximum(bottom[:, 0::2], bottom[:, 1::2]))
    return np.asarray(highest.astype(np.float64) + (MARGIN * float(np.abs(grid).max()) + TINY))


def _upsample_blocks(
    blended: np.ndarray, col_taps: Taps, rows: _Blocks, cols: _Blocks, chosen: np.ndarray
) -> list[Piece]:
    """The chosen blocks upsampled (the second stage), the blocks of one shape at once."""
    block_y, block_x = np.nonzero(chosen)
    heights, widths = rows.counts[block_y], cols.counts[block_x]
    shapes = heights * (BLOCK + 1) + widths  # blocks are at most BLOCK x BLOCK
    kinds = np.unique(shapes)
    pieces = []
    for kind in kinds.tolist():
        same = shapes == kind if kinds.size > 1 else slice(None)
        height, width = divmod(kind, BLOCK + 1)
        ys = (rows.starts[block_y[same]][:, None] + np.arange(height))[:, :, None]
        xs = (cols.starts[block_x[same]][:, None] + np.arange(width))[:, None, :]
        pieces.append((ys, xs, blend_blocks(blended, ys, xs, col_taps)))
    return pieces
