"""How far a model's runs really go over their estimated working set, measured, so that the
budget reserves what they take rather than what the shapes suggest.

The estimate (`working_set`: the input, the tensors handed back, twice the largest activation)
misses what onnxruntime's arena rounds up to and keeps live at once: PP-OCRv4 det runs at
736 x W peaked at 2-3x their estimate. Each run that is alone in flight (no other reservation:
the process's peak is then its own) and estimated at MIN_ESTIMATE or more is measured by the
process's resident-memory high-water mark (`ops.process.peak_resident_bytes`); the model's
reservations are then scaled by the largest ratio of its last HISTORY measured runs (at least
1, at most MAX_FACTOR).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from maxact.server.ops.process import peak_resident_bytes, reset_peak_resident, resident_bytes

log = logging.getLogger("maxact.server")
MIN_ESTIMATE = 8 * 1024 * 1024  # smaller runs: allocator noise would dominate the ratio
MAX_FACTOR = 4.0
HISTORY = 16
_MEASURING = threading.Lock()  # the high-water mark is the process's: one measurement at once


class RunPeaks:
    """One model's measured ratios of peak resident growth to estimated working set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ratios: deque[float] = deque(maxlen=HISTORY)

    def factor(self) -> float:
        """What the model's estimates are scaled by when reserved."""
        with self._lock:
            return min(MAX_FACTOR, max(1.0, *self._ratios)) if self._ratios else 1.0

    def record(self, estimate: int, grown: int) -> None:
        """A run estimated at `estimate` bytes grew the process by `grown` at its peak."""
        if estimate >= MIN_ESTIMATE and grown > 0:
            log.debug(
                "memory: a run estimated at %d MB peaked at +%d MB", estimate >> 20, grown >> 20
            )
            with self._lock:
                self._ratios.append(grown / estimate)

    @contextmanager
    def measured(self, estimate: int, alone: Callable[[], bool]) -> Iterator[None]:
        """Measure the block's peak growth when it runs `alone` (checked before and after)."""
        if estimate < MIN_ESTIMATE or not alone() or not _MEASURING.acquire(blocking=False):
            yield
            return
        try:
            before = resident_bytes()
            if not reset_peak_resident():
                yield
                return
            yield
            if alone():
                self.record(estimate, peak_resident_bytes() - before)
        finally:
            _MEASURING.release()
