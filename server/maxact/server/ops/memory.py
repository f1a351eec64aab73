"""One memory budget that every server cache shares, and the byte-bounded LRU they are built on.

What the server keeps between requests (onnxruntime sessions, decoded photos, layer outputs,
rendered patches) lives in `BudgetedCache`s. Each has its own cap and all of them together
stay within `CACHE_SHARE` of the process-wide budget (`maxact serve --memory-budget-mb`,
default a fraction of the machine's or the container's memory), and within what the rest of
the process (its resident memory minus the caches' charges) leaves of the budget. When a cache
inserts past its cap or past the shared total, least recently used entries go from the
largest cache (never the entry just added), and one log line per cache says so (at most one per
`LOG_INTERVAL_S`). `/metrics` reports the budget and each cache's bytes and entries.

What a request needs while it runs (its input batch and the activations onnxruntime computes)
is the rest of the budget: before each model run the caller reserves its estimated working set
(`MemoryBudget.reserved`, estimated from the model's shapes at that input size). Reservations
in flight stay within `work_bytes`; one that does not fit waits (at most `wait_seconds`), one
larger than `work_bytes` is refused, and the caches shrink by what is reserved, so that caches,
requests in flight and the rest of the process together stay within the budget.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

from cachetools import LRUCache

from maxact.server.errors import Code, ServiceError
from maxact.server.ops.process import release_free_memory, resident_bytes

log = logging.getLogger("maxact.server")

V = TypeVar("V")

BUDGET_ENV = "MAXACT_MEMORY_BUDGET_MB"
MACHINE_FRACTION = 0.5  # default budget: half of physical memory or the cgroup limit
CACHE_SHARE = 0.6  # of the budget, for everything the caches keep between requests
LOG_INTERVAL_S = 10.0
DEFAULT_WAIT_S = 30.0  # how long a model run waits for room in the budget before refusal
TRIM_AFTER_BYTES = 1024 * 1024  # evictions at least this large return free pages at once
_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory_bytes() -> int:
    """Physical memory, or the container's cgroup memory limit when that is smaller."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for name in _CGROUP_FILES:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def default_budget_mb() -> int:
    """MACHINE_FRACTION of the machine's (or container's) memory, in MiB."""
    return max(256, int(machine_memory_bytes() * MACHINE_FRACTION) // (1024 * 1024))


class _Entries(LRUCache[Hashable, tuple[V, int]]):
    """cachetools' LRU of (value, bytes) entries, counting what it evicts by its own cap."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize=maxsize, getsizeof=lambda entry: entry[1])
        self.evicted: list[int] = []

    def popitem(self) -> tuple[Hashable, tuple[V, int]]:
        key, entry = super().popitem()
        self.evicted.append(entry[1])
        return key, entry


class BudgetedCache(Generic[V]):
    """A thread-safe LRU of values with a byte cost each, under its own cap and the shared
    budget. An entry larger than the cap is returned but not kept."""

    def __init__(
        self,
        name: str,
        max_bytes: int,
        budget: MemoryBudget | None = None,
        keep_oversized: bool = False,
    ) -> None:
        """`keep_oversized`: an entry larger than the cap still replaces everything else
        (charged at the cap) instead of not being kept: a session rebuilt per call would cost
        more than it saves."""
        self.name = name
        self.max_bytes = max(1, max_bytes)
        self.keep_oversized = keep_oversized
        self._entries: _Entries[V] = _Entries(self.max_bytes)
        self._lock = threading.Lock()
        self._budget = budget if budget is not None else BUDGET
        self._logged = 0.0
        self._unlogged: list[int] = []
        self.evictions = 0
        self._budget.register(self)

    @property
    def bytes(self) -> int:
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: Hashable) -> V | None:
        """The value (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: Hashable, value: V, cost: int) -> V:
        """Keep `value` at `cost` bytes (the first value wins when one is already there), then
        evict beyond the cap and the shared budget; returns the kept value."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                return found[0]
            if self.keep_oversized:
                cost = min(cost, self.max_bytes)
            if cost <= self.max_bytes:
                self._entries[key] = (value, max(1, int(cost)))
            evicted, self._entries.evicted = self._entries.evicted, []
        self._note_evicted(evicted, f"its cap of {_mb(self.max_bytes)}")
        self._budget.reclaim(self)
        return value

    def set_cost(self, key: Hashable, cost: int) -> None:
        """Charge an entry `cost` bytes (what it turned out to hold, more or less than it was
        charged), then evict beyond the cap and the budget as `put` does; nothing when the
        entry is gone."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return
            cost = max(1, int(cost))
            if self.keep_oversized:
                cost = min(cost, self.max_bytes)
            if cost <= self.max_bytes:
                self._entries[key] = (found[0], cost)
            else:
                del self._entries[key]
            evicted, self._entries.evicted = self._entries.evicted, []
        self._note_evicted(evicted, f"its cap of {_mb(self.max_bytes)}")
        self._budget.reclaim(self)

    def evict_oldest(self) -> int:
        """Drop the least recently used entry; its bytes (0 when empty)."""
        with self._lock:
            if not self._entries:
                return 0
            _, (_, cost) = LRUCache.popitem(self._entries)
            return cost

    def evict(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop the entries whose key matches (e.g. all sessions of an unloaded model)."""
        with self._lock:
            doomed = [key for key in self._entries if predicate(key)]
            for key in doomed:
                del self._entries[key]
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _note_evicted(self, sizes: list[int], reason: str) -> None:
        """One log line per cache at most every LOG_INTERVAL_S, counting what went since."""
        if not sizes:
            return
        if sum(sizes) >= TRIM_AFTER_BYTES:
            release_free_memory()  # what the evicted entries held: back to the system now
        with self._lock:
            self.evictions += len(sizes)
            self._unlogged += sizes
            now = time.monotonic()
            if now - self._logged < LOG_INTERVAL_S:
                return
            self._logged, gone, self._unlogged = now, self._unlogged, []
        log.info(
            "memory: cache %r evicted %d entries (%s) under pressure (%s; cache now %s, all "
            "caches %s of %s for caches, budget %s)",
            self.name,
            len(gone),
            _mb(sum(gone)),
            reason,
            _mb(self.bytes),
            _mb(self._budget.charged()),
            _mb(self._budget.cache_bytes),
            _mb(self._budget.total_bytes),
        )


class MemoryBudget:
    """The process-wide budget; caches register themselves (held weakly)."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.wait_seconds = DEFAULT_WAIT_S
        self._caches: weakref.WeakSet[BudgetedCache[object]] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._room = threading.Condition()
        self.reserved_bytes = 0  # working sets of model runs in flight
        self.reserved_peak_bytes = 0
        self.admission_waits = 0
        self.admission_refusals = 0

    @property
    def work_bytes(self) -> int:
        """What the working sets of model runs in flight may reserve together."""
        return self.total_bytes - self.cache_bytes

    @contextmanager
    def reserved(
        self, nbytes: int, what: str, stop: threading.Event | None = None, wait: float | None = None
    ) -> Iterator[None]:
        """Hold `nbytes` of working memory for `what` (a model run) while the block runs: wait
        for room (at most `wait` seconds, default `wait_seconds`; until `stop` is set when
        `wait` is inf), refuse with RESOURCE_EXHAUSTED when it can never fit or the wait ends;
        the caches shrink to leave what is reserved."""
        self._admit(nbytes, what, stop, self.wait_seconds if wait is None else wait)
        try:
            self.reclaim(None)
            yield
        finally:
            with self._room:
                self.reserved_bytes -= nbytes
                self._room.notify_all()

    def _admit(self, nbytes: int, what: str, stop: threading.Event | None, wait: float) -> None:
        work = self.work_bytes
        if nbytes > work:
            self.admission_refusals += 1
            raise ServiceError(
                Code.RESOURCE_EXHAUSTED,
                "WORKING_SET_TOO_LARGE",
                f"{what} needs an estimated {_mb(nbytes)} of working memory, more than the "
                f"{_mb(work)} that the memory budget of {_mb(self.total_bytes)} leaves model "
                f"runs in flight (maxact serve --memory-budget-mb); use smaller inputs",
                {"estimate_bytes": str(nbytes), "bound_bytes": str(work)},
            )
        deadline = time.monotonic() + wait
        with self._room:
            if self.reserved_bytes + nbytes > work:
                self.admission_waits += 1
            while self.reserved_bytes + nbytes > work:
                left = deadline - time.monotonic()
                if stop is not None and stop.is_set():
                    raise RuntimeError("stopped while waiting for memory")
                if left <= 0:
                    self.admission_refusals += 1
                    raise ServiceError(
                        Code.RESOURCE_EXHAUSTED,
                        "MEMORY_BUSY",
                        f"{what} waited {wait:g} s for an estimated {_mb(nbytes)} of working "
                        f"memory: model runs in flight hold {_mb(self.reserved_bytes)} of the "
                        f"{_mb(work)} the memory budget of {_mb(self.total_bytes)} leaves them "
                        f"(maxact serve --memory-budget-mb, --memory-wait-seconds); retry later",
                        {"estimate_bytes": str(nbytes), "bound_bytes": str(work)},
                    )
                self._room.wait(min(left, 0.1))
            self.reserved_bytes += nbytes
            self.reserved_peak_bytes = max(self.reserved_peak_bytes, self.reserved_bytes)

    @property
    def cache_bytes(self) -> int:
        """What all caches together may hold."""
        return int(self.total_bytes * CACHE_SHARE)

    def allowed_cache_bytes(self, charged: int) -> int:
        """What the caches may hold now: their share, and less when the rest of the process
        (its resident memory minus what the caches are charged: the interpreter, models,
        requests in flight, allocator slack) and the working sets reserved for model runs
        leave less than that within the budget."""
        rest = resident_bytes() - charged
        room = self.total_bytes - self.reserved_bytes - max(0, rest)
        return max(0, min(self.cache_bytes, room))

    def configure(self, total_bytes: int, wait_seconds: float | None = None) -> None:
        self.total_bytes = total_bytes
        self.reserved_peak_bytes = self.reserved_bytes  # a new budget, a new high-water mark
        if wait_seconds is not None:
            self.wait_seconds = wait_seconds
        self.reclaim(None)

    def register(self, cache: BudgetedCache[V]) -> None:
        with self._lock:
            self._caches.add(cache)  # type: ignore[arg-type]

    def caches(self) -> list[BudgetedCache[object]]:
        with self._lock:
            return list(self._caches)

    def charged(self) -> int:
        return sum(cache.bytes for cache in self.caches())

    def reclaim(self, first: BudgetedCache[V] | None) -> None:
        """Evict least recently used entries of the largest caches until all fit their share
        (`first`, the cache that just inserted, keeps its newest entry)."""
        with self._lock:
            caches = list(self._caches)
            freed: dict[str, list[int]] = {}
            allowed = self.allowed_cache_bytes(sum(cache.bytes for cache in caches))
            while sum(cache.bytes for cache in caches) > allowed:
                victim = self._victim(caches, first)
                if victim is None:
                    break
                freed.setdefault(victim.name, []).append(victim.evict_oldest())
        reason = f"the shared budget of {_mb(self.cache_bytes)} for caches"
        for cache in caches:
            cache._note_evicted(freed.get(cache.name, []), reason)

    @staticmethod
    def _victim(
        caches: list[BudgetedCache[object]], first: BudgetedCache[V] | None
    ) -> BudgetedCache[object] | None:
        """The largest cache with something to give (`first` keeps its newest entry)."""
        candidates = [cache for cache in caches if len(cache) > (1 if cache is first else 0)]
        return max(candidates, key=lambda cache: cache.bytes, default=None)


def _mb(value: int) -> str:
    return f"{value / (1024 * 1024):.0f} MB"


def _initial_budget() -> int:
    text = os.environ.get(BUDGET_ENV, "")
    return (int(text) if text.isdigit() and int(text) > 0 else default_budget_mb()) * 1024 * 1024


BUDGET = MemoryBudget(_initial_budget())
"""The process's budget; `maxact serve --memory-budget-mb` sets it (`BUDGET.configure`)."""
