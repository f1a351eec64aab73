"""Patch thumbnails for the UI's <img> tags: one URL per (scan, layer, channel, ranking,
rank, render). A neuron's k patches are rendered together, once, and kept in an LRU: the
browser asks for them one by one and would otherwise make the server crop every image k
times. Concurrent requests for the same neuron wait for the one rendering it."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import cast

from cachetools import LRUCache

from maxact.common.kinds import RenderMode
from maxact.server.core.neurons import stored_neuron
from maxact.server.errors import invalid_argument
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.patches.render import RenderOptions

NEURONS_CACHED = 512  # neurons' patch sets kept (a 50-row page holds 50)
THUMBNAIL = 96  # px: patches on layer, class and compare pages
LARGE = 144  # px: patches on the neuron page (8 in a row at 1400 px)
SIZES = (THUMBNAIL, LARGE)


@dataclass(frozen=True)
class PatchKey:
    scan: str
    layer: str
    channel: int
    bottom: bool
    render: RenderMode
    size: int


def patch_key(
    scan: str, layer: str, channel: int, bottom: bool, render: str, size: int
) -> PatchKey:
    """A key from request parameters, each checked (the render mode and size are few)."""
    if size not in SIZES:
        raise invalid_argument("INVALID_PATCH_SIZE", f"size must be one of {SIZES}, got {size}")
    mode = RenderOptions(cast(RenderMode, render)).validated().mode  # INVALID_RENDER
    return PatchKey(scan, layer, channel, bottom, mode, size)


class PatchCache:
    def __init__(self, jobs: ScanJobs, size: int = NEURONS_CACHED) -> None:
        self._jobs = jobs
        self._done: LRUCache[PatchKey, tuple[bytes, ...]] = LRUCache(maxsize=size)
        self._pending: dict[PatchKey, Future[tuple[bytes, ...]]] = {}
        self._lock = threading.Lock()

    def cached(self, key: PatchKey) -> tuple[bytes, ...] | None:
        """The neuron's patches if rendered already (never blocks on a render)."""
        with self._lock:
            return self._done.get(key)

    def pngs(self, key: PatchKey) -> tuple[bytes, ...]:
        """The neuron's patches, best first (blocking: renders on a miss)."""
        with self._lock:
            found = self._done.get(key)
            if found is not None:
                return found
            waiting = self._pending.get(key)
            if waiting is None:
                mine: Future[tuple[bytes, ...]] = Future()
                self._pending[key] = mine
        if waiting is not None:
            return waiting.result()
        try:
            options = RenderOptions(key.render, patch_size=key.size)
            neuron = stored_neuron(
                self._jobs, key.scan, key.layer, key.channel, 0, key.bottom, options
            )
            result = tuple(patch.png for patch in neuron.patches)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._pending.pop(key, None)
        with self._lock:
            self._done[key] = result
        mine.set_result(result)
        return result
