"""Compare the engine's fields with the oracle's, unit by unit."""

from __future__ import annotations

import numpy as np
import onnx

from maxact.server.rf import ReceptiveFields, TensorField, compute_receptive_fields

from .oracle import oracle_fields


def _engine_bounds(f: TensorField) -> tuple[np.ndarray, ...]:
    """(row_lo, row_hi, col_lo, col_hi) per (channel, y, x), like the oracle's, empty -> 0."""
    c, h, w = f.channels, f.height, f.width
    rows = np.zeros((c, h, 2), np.int64)
    cols = np.zeros((c, w, 2), np.int64)
    for g in f.groups:
        rows[g.first : g.last + 1] = np.array(g.rows)
        cols[g.first : g.last + 1] = np.array(g.cols)
    out = []
    empty = (rows[:, :, None, 0] >= rows[:, :, None, 1]) | (
        cols[:, None, :, 0] >= cols[:, None, :, 1]
    )
    for arr, axis in ((rows, 1), (cols, 2)):
        for k in range(2):
            v = arr[:, :, k]
            full = np.broadcast_to(v[:, :, None] if axis == 1 else v[:, None, :], (c, h, w))
            out.append(np.where(empty, 0, full))
    return tuple(out)


def _to_chw(a: np.ndarray, f: TensorField) -> np.ndarray:
    return np.transpose(a, (f.channel_axis - 1, f.height_axis - 1, f.width_axis - 1))


def _axis_units(oracle: tuple[np.ndarray, ...], axis: int, ch: int, i: int) -> np.ndarray:
    """(lo, hi) pairs the oracle reports for unit i of one axis (all units of the other axis)."""
    lo = oracle[2 * axis][ch][i, :] if axis == 0 else oracle[2 * axis][ch][:, i]
    hi = oracle[2 * axis + 1][ch][i, :] if axis == 0 else oracle[2 * axis + 1][ch][:, i]
    live = hi > lo  # units fed through the other axis' constant padding are empty
    return np.stack([lo[live], hi[live]], axis=1)


def check_geometry(f: TensorField, oracle: tuple[np.ndarray, ...]) -> int:
    """R/S/P against the oracle; returns how many units confirmed them.

    Exact geometry: no oracle box is wider than R, and the interior units (formula box inside
    the input, oracle box R wide: not clipped anywhere) sit exactly at `[i*S - P, i*S - P + R)`;
    S is also derived from consecutive such units. Inexact (fractional) geometry: the formula
    box of every unit whose formula box lies inside the input contains the oracle box.
    """
    seen = 0
    for g in f.groups:
        for axis, geom, n, size in (
            (0, g.height, f.height, f.input_height),
            (1, g.width, f.width, f.input_width),
        ):
            full = {}
            for i in range(n):
                start, end = geom.start(i), geom.start(i) + geom.size
                boxes = _axis_units(oracle, axis, g.first, i)
                if not len(boxes):
                    continue
                lo, hi = boxes[:, 0], boxes[:, 1]
                where = f"{f.tensor} ch{g.first} axis{axis} unit {i} ({geom})"
                if geom.exact:
                    assert (hi - lo <= geom.size).all(), f"{where}: oracle box wider than R"
                    if start >= 0 and end <= size and (hi - lo == geom.size).all():
                        assert (lo == start).all(), f"{where}: oracle starts at {lo[0]}"
                        full[i] = int(lo[0])
                        seen += 1
                elif start >= 0 and end <= size:
                    assert (lo >= start).all() and (hi <= end).all(), f"{where}: outside envelope"
                    seen += 1
            pairs = [full[i + 1] - full[i] for i in full if i + 1 in full]
            assert all(p == geom.stride for p in pairs), f"{f.tensor}: derived strides {pairs}"
    return seen


def assert_matches_oracle(
    model: onnx.ModelProto,
    size: tuple[int, int],
    layout: str = "nchw",
    channels: int = 3,
    rf: ReceptiveFields | None = None,
    min_interior: int = 0,
) -> ReceptiveFields:
    """Every unit of every spatial tensor: engine box == oracle box; R/S/P as above."""
    rf = rf or compute_receptive_fields(model, size)
    tensors = [t for t in rf.tensors() if rf.field(t).spatial and t != rf.input_name]
    assert tensors
    shape = (1, channels, *size) if layout == "nchw" else (1, *size, channels)
    h_axis, w_axis = (2, 3) if layout == "nchw" else (1, 2)
    oracle = oracle_fields(model, shape, h_axis, w_axis, tensors)
    interior = 0
    for t in tensors:
        f = rf.field(t)
        got = [_to_chw(a, f) for a in oracle[t]]
        want = _engine_bounds(f)
        assert got[0].shape == want[0].shape, f"{t}: shape {got[0].shape} vs {want[0].shape}"
        for k, label in enumerate(("row lo", "row hi", "col lo", "col hi")):
            bad = np.argwhere(got[k] != want[k])
            assert not len(bad), (
                f"{t}: {label} differs at (c,y,x)={tuple(bad[0])}: oracle "
                f"{got[k][tuple(bad[0])]} engine {want[k][tuple(bad[0])]} ({len(bad)} units)"
            )
        interior += check_geometry(f, got)
    assert interior >= min_interior
    return rf
