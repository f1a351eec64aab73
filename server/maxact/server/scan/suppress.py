"""Position mode for every channel at once: greedy receptive-field suppression inside each image.

For each (image, channel) the greedy rule (docs/contracts.md): visit units best first (row-major on
ties), keep a unit unless its receptive-field box overlaps a kept one, stop at the per-image cap.
Boxes are separable (rows x cols intervals), so "overlaps" is row_overlap[y] & col_overlap[x]:
one step picks the best live unit of every (image, channel) in one argmax and clears its
overlapping units with one broadcast, so the cost is `cap` vectorised passes over the tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Interval = tuple[int, int]


def overlap_matrix(intervals: Sequence[Interval]) -> np.ndarray:
    """[n, n] bool: half-open intervals i and j are both non-empty and intersect.

    A unit whose box is empty (fed only by padding) overlaps nothing, like `TensorField.box`.
    """
    a = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)
    nonempty = a[:, 0] < a[:, 1]
    meets = (a[:, None, 0] < a[None, :, 1]) & (a[None, :, 0] < a[:, None, 1])
    return meets & nonempty[:, None] & nonempty[None, :]


def suppressed_candidates(
    maps: np.ndarray,
    row_overlap: np.ndarray,
    col_overlap: np.ndarray,
    cap: int,
    largest: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Up to `cap` kept units per (image, channel) of maps [B, C, H, W].

    Returns scores, ys, xs, valid, each [B, cap, C]; `valid` is False past the last kept unit.
    """
    b, c, h, w = maps.shape
    flat = maps.reshape(b, c, h * w)
    key = np.asarray(flat if largest else -flat, dtype=np.float32)
    key = np.where(np.isnan(key), -np.inf, key)
    live = np.ones((b, c, h * w), dtype=bool)
    scores = np.zeros((b, cap, c), dtype=flat.dtype)
    ys = np.zeros((b, cap, c), dtype=np.int64)
    xs = np.zeros((b, cap, c), dtype=np.int64)
    valid = np.zeros((b, cap, c), dtype=bool)
    bi, ci = np.meshgrid(np.arange(b), np.arange(c), indexing="ij")
    for step in range(cap):
        any_live = live.any(axis=2)
        if not any_live.any():
            break
        masked = np.where(live, key, -np.inf)
        position = np.argmax(masked, axis=2)
        position = np.where(  # only -inf left: the first live unit, as a stable sort would
            np.take_along_axis(masked, position[..., None], axis=2)[..., 0] == -np.inf,
            np.argmax(live, axis=2),
            position,
        )
        y, x = position // w, position % w
        scores[:, step] = flat[bi, ci, position]
        ys[:, step], xs[:, step], valid[:, step] = y, x, any_live
        cleared = row_overlap[y][:, :, :, None] & col_overlap[x][:, :, None, :]
        live &= ~cleared.reshape(b, c, h * w)
        live[bi, ci, position] = False
    return scores, ys, xs, valid
