"""Bounded caches that let a report decode each source image once and run a layer once per
image, although it asks for its patches channel by channel (thousands of GetNeuron calls).

Keys name a file by path, size and mtime (a changed file is a new key); entries are evicted
least-recently-used within a byte cap and the server's shared memory budget (`ops.memory`).
Threads missing the same key compute it once: the others wait for it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from maxact.server.ops.memory import BudgetedCache

V = TypeVar("V")

ORIGINALS_BYTES = 512 * 1024 * 1024  # decoded RGB photos: ~4.5 MB for 1235x1235
ACTIVATIONS_BYTES = 384 * 1024 * 1024  # one layer's output for one image, all channels
RENDERED_BYTES = 64 * 1024 * 1024  # encoded patches


class SizedLRU(Generic[V]):
    """A thread-safe LRU map with a byte cap (`size_of` an entry), sharing the server's memory
    budget with its other caches (`ops.memory`)."""

    def __init__(self, name: str, budget: int, size_of: Callable[[V], int]) -> None:
        self._cache: BudgetedCache[V] = BudgetedCache(name, budget)
        self._size_of = size_of
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value, else `compute()` once (other threads asking for the same key
        wait for it rather than repeat the work)."""
        found = self._cache.get(key)
        if found is not None:
            with self._lock:
                self.hits += 1
            return found
        with self._lock:
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            found = self._cache.get(key)
            with self._lock:
                if found is not None:
                    self.hits += 1
                    return found
                self.misses += 1
            try:
                value = compute()
                # larger than the whole cap: used once, not kept
                self._cache.put(key, value, self._size_of(value))
            finally:
                with self._lock:
                    self._pending.pop(key, None)
        return value

    def clear(self) -> None:
        """Empty the cache and restart its hit / miss counts."""
        self._cache.clear()
        with self._lock:
            self.hits = self.misses = 0


def _image_bytes(image: Image.Image) -> int:
    return max(1, image.width * image.height * len(image.getbands()))


def _array_bytes(entry: tuple[Any, np.ndarray]) -> int:
    return max(1, int(entry[1].nbytes))


ORIGINALS: SizedLRU[Image.Image] = SizedLRU("decoded_originals", ORIGINALS_BYTES, _image_bytes)
# rendered `rf` patches (PatchImage): one per image and field box, shared by every channel
RENDERED: SizedLRU[Any] = SizedLRU(
    "rendered_patches", RENDERED_BYTES, lambda patch: max(1, len(patch.png))
)
ACTIVATIONS: SizedLRU[tuple[Any, np.ndarray]] = SizedLRU(
    "layer_outputs", ACTIVATIONS_BYTES, _array_bytes
)


def file_key(path: Path) -> Hashable | None:
    """(path, size, mtime) of an existing file; None when it cannot be read (no caching)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path), stat.st_size, stat.st_mtime_ns)


def layer_output(owner: object, key: Hashable, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """A layer's output for one image, cached under `key`; `owner` (the loaded model) is held
    weakly and checked, so a model reloaded under the same name never sees stale outputs."""
    entry = ACTIVATIONS.get(key, lambda: (weakref.ref(owner), compute()))
    if entry[0]() is owner:
        return entry[1]
    return compute()
