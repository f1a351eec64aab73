"""Exact, order-independent sums of float32 values, so merged shards equal one scan bit for bit.

A float32 is m * 2**e with a 24-bit integer m. Each value is added as an integer into 16-bit
"limbs" of a fixed-point number whose unit is 2**-172 (below the smallest float32 subnormal).
Integer addition is associative, and carries are normalised before the limbs are read (every
limb but the top one in [0, 2**16)), so the normalised state is a unique function of the
multiset of values: any split into shards and any batch order gives identical limbs.
"""

from __future__ import annotations

import numpy as np

LIMB_BITS = 16
_BASE_EXPONENT = -172  # 2**-149 (smallest subnormal) = 2**23 * 2**-172
LIMBS = 21  # bit positions 0..276 for finite float32, plus headroom for carries
# each add puts < 2**53 into a limb; carries are propagated before 2**63 could be reached
_NORMALISE_EVERY = 512
# a value adds < 2**40 to one limb, so 8192 values per cell keep a bincount total exact
MAX_VALUES_PER_CELL = 8192


def _contributions(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(limb index, integer weight < 2**40) of each value; values are cast to float32."""
    as32 = np.nan_to_num(np.asarray(values, dtype=np.float32))
    mantissa, exponent = np.frexp(as32.astype(np.float64))
    m = np.ldexp(mantissa, 24)  # exact integer-valued float64, |m| < 2**24
    position = np.where(m == 0, 0, exponent.astype(np.int64) - 24 - _BASE_EXPONENT)
    limb = position // LIMB_BITS
    weight = np.ldexp(m, (position % LIMB_BITS).astype(np.int32))
    return limb, weight


class ExactSums:
    """A grid of independent exact sums (e.g. [classes, channels]); add values cell by cell."""

    def __init__(self, cells: int) -> None:
        self.cells = cells
        self._limbs = np.zeros((cells, LIMBS), dtype=np.int64)
        self._pending = 0  # adds since the last carry normalisation

    @property
    def limbs(self) -> np.ndarray:
        """The normalised limbs: a unique function of the multiset of values added."""
        self._normalise()
        return self._limbs

    def add(self, cell: np.ndarray, values: np.ndarray) -> None:
        """Add values[i] to cell[i]: flat arrays, or [N, M] arrays whose rows each name
        distinct cells (so no cell gets more than N values from one call)."""
        cell = np.asarray(cell, dtype=np.int64)
        values = np.asarray(values)
        if cell.size == 0:
            return
        if cell.ndim != 2:
            cell, values = cell.reshape(-1, 1), values.reshape(-1, 1)
        if cell.shape[0] > MAX_VALUES_PER_CELL:  # each bin's total stays below 2**53
            for start in range(0, cell.shape[0], MAX_VALUES_PER_CELL):
                end = start + MAX_VALUES_PER_CELL
                self.add(cell[start:end], values[start:end])
            return
        limb, weight = _contributions(values.reshape(-1))
        totals = np.bincount(
            cell.reshape(-1) * LIMBS + limb, weights=weight, minlength=self.cells * LIMBS
        ).reshape(self.cells, LIMBS)
        self._limbs += totals.astype(np.int64)
        self._pending += 1
        if self._pending >= _NORMALISE_EVERY:
            self._normalise()

    def add_rows(self, values: np.ndarray) -> None:
        """Add a [N, cells] array: row i's value j goes to cell j."""
        n = values.shape[0]
        self.add(np.broadcast_to(np.arange(self.cells), (n, self.cells)), values)

    def merge(self, other: ExactSums) -> None:
        if other.cells != self.cells:
            raise ValueError("can only merge sums over the same cells")
        self._limbs += other.limbs
        self._pending += 1
        self._normalise()

    def load_limbs(self, limbs: np.ndarray) -> None:
        """Restore sums from `limbs` (as a checkpoint stored them)."""
        limbs = np.asarray(limbs)
        if limbs.shape != (self.cells, LIMBS):
            raise ValueError(f"limbs have shape {limbs.shape}, expected {(self.cells, LIMBS)}")
        self._limbs = limbs.astype(np.int64)
        self._pending = 1
        self._normalise()

    def _normalise(self) -> None:
        if self._pending == 0:
            return
        limbs = self._limbs
        for i in range(LIMBS - 1):
            carry = limbs[:, i] >> LIMB_BITS
            limbs[:, i] -= carry << LIMB_BITS
            limbs[:, i + 1] += carry
        self._pending = 0

    def values(self) -> np.ndarray:
        """The sums as float64 (a fixed function of the limbs, so equal limbs give equal sums)."""
        scales = np.ldexp(1.0, np.arange(LIMBS) * LIMB_BITS + _BASE_EXPONENT)
        limbs = self.limbs
        total = np.zeros(self.cells)
        for i in range(LIMBS - 1, -1, -1):
            total = total + limbs[:, i] * scales[i]
        return total
