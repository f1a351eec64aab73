"""One LRU of onnxruntime sessions for the whole server, charged by what they really hold.

A session per (model, layer set) keeps repeated requests fast; the bound keeps a server with
many models or layer sets from growing without limit. A session is charged the growth of the
process's resident memory while onnxruntime built it (weights, prepacked copies, the
optimised graph), at least twice its serialized graph, plus the growth over its first run
(`first_run`: the buffers onnxruntime's arena keeps for the next run, ~100 MB for PP-LCNet at
batch 16; together ~125 MB where the serialized graph suggested 14 MB). Concurrent requests
make both measurements noisy, never negative. The cache shares the server's memory budget
(`ops.memory`); a new session of a model reserves what the model's last one cost while it is
built, so that the caches make room before it exists rather than after.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from maxact.server.ops.memory import BudgetedCache, MemoryBudget
from maxact.server.ops.process import resident_bytes
from maxact.server.settings import DEFAULT_SESSION_CACHE_MB, MIB

DEFAULT_MAX_BYTES = DEFAULT_SESSION_CACHE_MB * MIB
T = TypeVar("T")
COST_FACTOR = 2  # the floor of a session's charge: weights plus their prepacked copies


class SessionCache(BudgetedCache[Any]):
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, budget: MemoryBudget | None = None):
        super().__init__("sessions", max_bytes, budget, keep_oversized=True)
        self._creating = threading.Lock()
        self._unmeasured: dict[int, Hashable] = {}  # id(session) -> key, until its first run
        self._built: dict[str, int] = {}  # model -> what its last session cost, first run included

    def get_or_create(self, key: Hashable, create: Callable[[], tuple[Any, int]]) -> Any:
        """The cached value for `key`, else `create()` -> (value, graph bytes), charged by the
        resident memory it added; least recently used sessions go beyond the budget."""
        found = self.get(key)
        if found is not None:
            return found
        with self._creating:  # one at a time: the RSS growth is then this session's
            found = self.get(key)
            if found is not None:
                return found
            model = _model_of(key)
            # room first: the caches shrink by what the last session of this model cost
            # before this one is built, not after (the new one would be on top of them)
            expected = min(self._built.get(model, 0), self._budget.work_bytes)
            with self._budget.reserved(expected, f"building a session of model {model!r}"):
                before = resident_bytes()
                value, graph_bytes = create()
                grown = resident_bytes() - before
            session = value[0] if isinstance(value, tuple) else value
            self._unmeasured[id(session)] = key
            cost = max(grown, COST_FACTOR * graph_bytes)
            self._built[model] = cost
        return self.put(key, value, cost)

    def first_run(self, session: object, run: Callable[[], T]) -> T:
        """`run()`; the first time for a cached `session`, its resident-memory growth is
        added to the session's charge."""
        key = self._unmeasured.pop(id(session), None)
        if key is None:
            return run()
        before = resident_bytes()
        result = run()
        grown = resident_bytes() - before
        self.add_cost(key, grown)
        model = _model_of(key)
        self._built[model] = self._built.get(model, 0) + max(0, grown)
        return result


def _model_of(key: Hashable) -> str:
    """The model a session key belongs to (keys are (model name, kind, layers...))."""
    return str(key[0]) if isinstance(key, tuple) and key else ""
