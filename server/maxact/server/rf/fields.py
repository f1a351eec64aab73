"""Public, immutable receptive-field records (the convention of docs/contracts.md).

Unit i of an axis covers `[i*S - P, i*S - P + R)` model-input pixels before clipping; `rows`/`cols`
hold the exact half-open pixel interval that can reach each unit, clipped at every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

Interval = tuple[int, int]


@dataclass(frozen=True)
class AxisGeometry:
    """R/S/P of one axis as exact rationals.

    `exact` is True when `[i*S - P, i*S - P + R)` equals the exact box of every interior unit
    (formula box inside the input); False after fractional-stride ops (Resize, ConvTranspose
    with stride > 1, DepthToSpace), where the formula box is the tightest affine envelope that
    contains every interior unit's exact box.
    """

    size: Fraction
    stride: Fraction
    padding: Fraction
    exact: bool = field(default=True, compare=False)

    def start(self, i: int) -> Fraction:
        """Unclipped first pixel of unit i."""
        return i * self.stride - self.padding


def union_geometry(geoms: list[AxisGeometry], length: int) -> AxisGeometry:
    """Smallest affine envelope containing every geometry's formula box for units 0..length-1.

    With equal strides (the usual case) this is `P = max P_g`, `R = max(R_g - P_g) + P`: the hull
    of the boxes, exact when every part is. With unequal strides the first stride is kept and
    R/P grow to contain all parts over the tensor's actual units (then `exact` is False).
    """
    if len(geoms) == 1:
        return geoms[0]
    stride = geoms[0].stride
    same = all(g.stride == stride for g in geoms)
    last = max(length - 1, 0)
    pad = max(max(i * stride - g.start(i) for i in (0, last)) for g in geoms)
    end = max(max(g.start(i) + g.size - i * stride for i in (0, last)) for g in geoms)
    return AxisGeometry(end + pad, stride, pad, exact=same and all(g.exact for g in geoms))


def _union_intervals(parts: list[tuple[Interval, ...]]) -> tuple[Interval, ...]:
    """Per-unit hull of several interval lists (empty intervals are ignored)."""
    out = []
    for ivs in zip(*parts, strict=True):
        live = [iv for iv in ivs if iv[0] < iv[1]]
        out.append((min(a for a, _ in live), max(b for _, b in live)) if live else (0, 0))
    return tuple(out)


@dataclass(frozen=True)
class ChannelGroupField:
    """Channels first..last (inclusive) that share one receptive field."""

    first: int
    last: int
    height: AxisGeometry
    width: AxisGeometry
    rows: tuple[Interval, ...]
    cols: tuple[Interval, ...]


@dataclass(frozen=True)
class TokenGrid:
    """Where a token sequence's grid is: tensor rank, token axis, prefix tokens (CLS,
    registers, no spatial field) and the grid (height, width) of the tokens after them."""

    rank: int
    axis: int
    prefix: int
    height: int
    width: int

    def view(self, output: np.ndarray) -> np.ndarray:
        """The grid tokens of a [N, ...] output as [N, H, W, C]: prefix tokens dropped, the
        channels numbered row-major over the other non-batch axes."""
        moved = np.moveaxis(np.asarray(output), self.axis, 1)
        tokens = moved.reshape(moved.shape[0], moved.shape[1], -1)[:, self.prefix :]
        return tokens.reshape(tokens.shape[0], self.height, self.width, tokens.shape[2])


@dataclass(frozen=True)
class TensorField:
    """Receptive field of every unit of one tensor, per channel group."""

    tensor: str
    spatial: bool
    channels: int
    height: int
    width: int
    channel_axis: int
    height_axis: int
    width_axis: int
    groups: tuple[ChannelGroupField, ...]
    global_context: bool
    input_height: int
    input_width: int
    # a token sequence: the axes above are those of `tokens.view(output)`, [N, H, W, C]
    tokens: TokenGrid | None = None

    def geometry(self) -> tuple[AxisGeometry, AxisGeometry]:
        """(height, width) geometry of the union over channel groups (see `union_geometry`)."""
        return (
            union_geometry([g.height for g in self.groups], self.height),
            union_geometry([g.width for g in self.groups], self.width),
        )

    def rows(self) -> tuple[Interval, ...]:
        """Exact input-row interval per output row, hull over all channel groups."""
        return _union_intervals([g.rows for g in self.groups])

    def cols(self) -> tuple[Interval, ...]:
        """Exact input-column interval per output column, hull over all channel groups."""
        return _union_intervals([g.cols for g in self.groups])

    def group_of(self, channel: int) -> ChannelGroupField:
        """The channel group holding `channel` (IndexError when out of range)."""
        for g in self.groups:
            if g.first <= channel <= g.last:
                return g
        raise IndexError(f"channel {channel} out of range 0..{self.channels - 1} of {self.tensor}")

    def _check_unit(self, y: int, x: int) -> None:
        if not (0 <= y < self.height and 0 <= x < self.width):
            raise IndexError(f"unit ({y}, {x}) outside {self.height}x{self.width} of {self.tensor}")

    def box(self, y: int, x: int, channel: int | None = None) -> tuple[int, int, int, int]:
        """Exact (y0, x0, y1, x1), half-open, of the input pixels that can reach unit (y, x).

        A unit fed only by constant padding has the empty box (0, 0, 0, 0).
        """
        self._check_unit(y, x)
        if channel is None:
            (y0, y1), (x0, x1) = self.rows()[y], self.cols()[x]
        else:
            g = self.group_of(channel)
            (y0, y1), (x0, x1) = g.rows[y], g.cols[x]
        if y0 >= y1 or x0 >= x1:
            return (0, 0, 0, 0)
        return (y0, x0, y1, x1)

    def box_unclipped(
        self, y: int, x: int, channel: int | None = None
    ) -> tuple[float, float, float, float]:
        """Formula box `[i*S - P, i*S - P + R)` per axis, as floats (may leave the input)."""
        self._check_unit(y, x)
        gh, gw = self.geometry() if channel is None else _pair(self.group_of(channel))
        y0, x0 = gh.start(y), gw.start(x)
        return (float(y0), float(x0), float(y0 + gh.size), float(x0 + gw.size))

    def box_outward(self, y: int, x: int, channel: int | None = None) -> tuple[int, int, int, int]:
        """The formula box rounded outward to whole pixels (not clipped)."""
        y0, x0, y1, x1 = self.box_unclipped(y, x, channel)
        return (math.floor(y0), math.floor(x0), math.ceil(y1), math.ceil(x1))


def _pair(g: ChannelGroupField) -> tuple[AxisGeometry, AxisGeometry]:
    return g.height, g.width
