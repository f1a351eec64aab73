"""One LRU of onnxruntime sessions for the whole server, bounded by estimated memory.

A session per set of exposed tensors keeps repeated requests fast; the bound keeps a server
with many models or many layer sets from growing without limit. A session's cost is
estimated from its pruned graph (weights dominate: onnxruntime holds them plus prepacked
copies, hence twice the serialized size) — an estimate, not a measurement.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from maxact.server.settings import DEFAULT_SESSION_CACHE_MB, MIB

DEFAULT_MAX_BYTES = DEFAULT_SESSION_CACHE_MB * MIB
COST_FACTOR = 2


class SessionCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_create(self, key: Hashable, create: Callable[[], tuple[Any, int]]) -> Any:
        """The cached value for `key`, else `create()` -> (value, graph bytes), then evict the
        least recently used entries beyond the budget (never the one just created)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        value, graph_bytes = create()
        cost = COST_FACTOR * graph_bytes
        with self._lock:
            if key in self._entries:  # created concurrently: keep the first
                return self._entries[key][0]
            self._entries[key] = (value, cost)
            self._bytes += cost
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted
            return value

    def evict(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop entries whose key matches (e.g. all sessions of an unloaded model)."""
        with self._lock:
            doomed = [key for key in self._entries if predicate(key)]
            for key in doomed:
                self._bytes -= self._entries.pop(key)[1]
            return len(doomed)
