"""Per-axis field propagation: exact intervals per unit plus the R/S/P envelope.

Every spatial op is described per axis by its taps: output unit i reads input units taps[i, t]
where valid[i, t]. The exact interval of unit i is the hull of the intervals of the valid taps
(clipping at every layer comes for free: out-of-range taps are simply not valid). The R/S/P
envelope comes from the continuous description "unit i reads input indices within
[a*i + b, a*i + b + w]".
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from maxact.server.rf.fields import AxisGeometry, union_geometry

# Sentinels of an empty interval: min/max reductions then ignore it naturally.
EMPTY_LO = np.int64(2**40)
EMPTY_HI = np.int64(-(2**40))


@dataclass(frozen=True)
class AxisField:
    """Internal: exact per-unit intervals (lo inclusive, hi exclusive) and the geometry."""

    lo: np.ndarray
    hi: np.ndarray
    geom: AxisGeometry

    @property
    def length(self) -> int:
        return len(self.lo)

    def intervals(self) -> tuple[tuple[int, int], ...]:
        """Public form: empty intervals become (0, 0)."""
        return tuple(
            (int(a), int(b)) if a < b else (0, 0)
            for a, b in zip(self.lo.tolist(), self.hi.tolist(), strict=True)
        )


def identity_axis(n: int) -> AxisField:
    """The model input itself: unit i is pixel i."""
    lo = np.arange(n, dtype=np.int64)
    return AxisField(lo, lo + 1, AxisGeometry(Fraction(1), Fraction(1), Fraction(0)))


def propagate(
    src: AxisField,
    taps: np.ndarray,
    valid: np.ndarray,
    a: Fraction,
    b: Fraction,
    w: Fraction,
    exact: bool,
) -> AxisField:
    """Apply one op along an axis (see module docstring); `exact` says the envelope is tight."""
    idx = np.clip(taps, 0, max(src.length - 1, 0))
    ok = valid & (taps >= 0) & (taps < src.length)
    lo = np.where(ok, src.lo[idx], EMPTY_LO).min(axis=1)
    hi = np.where(ok, src.hi[idx], EMPTY_HI).max(axis=1)
    g = src.geom
    geom = AxisGeometry(
        size=g.size + w * g.stride,
        stride=a * g.stride,
        padding=g.padding - b * g.stride,
        exact=g.exact and exact,
    )
    return AxisField(lo, hi, geom)


def window_axis(
    src: AxisField, n_out: int, kernel: int, stride: int, dilation: int, pad_begin: int
) -> AxisField:
    """Conv / pooling window: unit i reads i*stride - pad_begin + t*dilation, t < kernel."""
    i = np.arange(n_out, dtype=np.int64)[:, None]
    t = np.arange(kernel, dtype=np.int64)[None, :]
    taps = i * stride - pad_begin + t * dilation
    return propagate(
        src,
        taps,
        np.ones_like(taps, dtype=bool),
        Fraction(stride),
        Fraction(-pad_begin),
        Fraction((kernel - 1) * dilation),
        True,
    )


def transposed_window_axis(
    src: AxisField, n_out: int, kernel: int, stride: int, dilation: int, pad_begin: int
) -> AxisField:
    """ConvTranspose: output o receives input i when o = i*stride + t*dilation - pad_begin."""
    o = np.arange(n_out, dtype=np.int64)[:, None]
    t = np.arange(kernel, dtype=np.int64)[None, :]
    num = o + pad_begin - t * dilation
    taps = np.floor_divide(num, stride)
    valid = (num % stride) == 0
    span = Fraction((kernel - 1) * dilation)
    return propagate(
        src,
        taps,
        valid,
        Fraction(1, stride),
        (pad_begin - span) / stride,
        span / stride,
        stride == 1,
    )


def gather_axis(
    src: AxisField, index: np.ndarray, a: Fraction, b: Fraction, w: Fraction, exact: bool
) -> AxisField:
    """One tap per unit (Slice, Pad, nearest Resize...): unit i reads input index[i] (-1: none)."""
    taps = index.astype(np.int64)[:, None]
    return propagate(src, taps, taps >= 0, a, b, w, exact)


def union_axes(parts: list[AxisField]) -> AxisField:
    """Hull of several fields of the same length (caller checks stride alignment)."""
    if len(parts) == 1:
        return parts[0]
    lo = np.minimum.reduce([p.lo for p in parts])
    hi = np.maximum.reduce([p.hi for p in parts])
    return AxisField(lo, hi, union_geometry([p.geom for p in parts], len(lo)))
