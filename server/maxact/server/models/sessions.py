"""One LRU of onnxruntime sessions for the whole server, charged by what they really hold.

A session per (model, layer set) keeps repeated requests fast; the bound keeps a server with
many models or layer sets from growing without limit. A session really costs the growth of the
process's resident memory while onnxruntime builds it (weights, prepacked copies, the
optimised graph; at least twice its serialized graph) plus the growth over its first run
(`first_run`: the buffers onnxruntime's arena keeps for the next run). Before a session is
built its cost is estimated (`session_cost`: from its pruned graph at the input size and what
the model's earlier sessions cost per byte); the budget holds the estimate while it is built
and the cache charges it until the first run, so the caches make room BEFORE the session
exists; the first run then replaces the estimate by the measured cost. Concurrent requests make
the measurements noisy, never negative. The cache shares the server's memory budget
(`ops.memory`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from maxact.server.models.session_cost import SessionCosts
from maxact.server.ops.memory import BudgetedCache, MemoryBudget
from maxact.server.ops.process import resident_bytes
from maxact.server.settings import DEFAULT_SESSION_CACHE_MB, MIB

DEFAULT_MAX_BYTES = DEFAULT_SESSION_CACHE_MB * MIB
T = TypeVar("T")
log = logging.getLogger("maxact.server")
COST_FACTOR = 2  # the floor of a session's charge: weights plus their prepacked copies


class SessionCache(BudgetedCache[Any]):
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, budget: MemoryBudget | None = None):
        super().__init__("sessions", max_bytes, budget, keep_oversized=True)
        self._creating = threading.Lock()
        self._unmeasured: dict[int, _Built] = {}  # id(session) -> its build, until its first run
        self.costs = SessionCosts()

    def get_or_create(
        self, key: Hashable, create: Callable[[], tuple[Any, int]], size_bytes: int = 0
    ) -> Any:
        """The cached value for `key`, else `create()` -> (value, graph bytes). A new session
        of `size_bytes` (`session_cost.pruned_size_bytes`) is estimated before it is built;
        the budget holds the estimate while it is built and the cache charges it until its
        first run measures what it really holds; least recently used sessions go beyond the
        budget."""
        found = self.get(key)
        if found is not None:
            return found
        with self._creating:  # one at a time: the RSS growth is then this session's
            found = self.get(key)
            if found is not None:
                return found
            model = _model_of(key)
            estimate = self.costs.estimate(model, size_bytes)
            with self._budget.reserved(
                min(estimate, self._budget.work_bytes), f"building a session of model {model!r}"
            ):
                before = resident_bytes()
                value, graph_bytes = create()
                grown = max(0, resident_bytes() - before)
            session = value[0] if isinstance(value, tuple) else value
            floor = max(grown, COST_FACTOR * graph_bytes)
            self._unmeasured[id(session)] = _Built(key, floor, size_bytes)
            log.debug(
                "memory: session %r built: RSS +%s, estimated %s",
                key,
                _mb(grown),
                _mb(estimate),
            )
        return self.put(key, value, max(floor, estimate))

    def first_run(self, session: object, run: Callable[[], T]) -> T:
        """`run()`; the first time for a cached `session`, the session is charged what it
        really holds: its build's and this run's resident-memory growth."""
        built = self._unmeasured.pop(id(session), None)
        if built is None:
            return run()
        before = resident_bytes()
        result = run()
        grown = max(0, resident_bytes() - before)
        log.debug("memory: session %r first run: RSS +%s", built.key, _mb(grown))
        cost = built.floor + grown
        self.set_cost(built.key, cost)
        self.costs.measured(_model_of(built.key), built.size_bytes, cost)
        return result


@dataclass(frozen=True)
class _Built:
    key: Hashable
    floor: int  # its charge without the first run: its build's growth, at least 2x its graph
    size_bytes: int


def _mb(value: int) -> str:
    return f"{value / MIB:.0f} MB"


def _model_of(key: Hashable) -> str:
    """The model a session key belongs to (keys are (model name, kind, layers...))."""
    return str(key[0]) if isinstance(key, tuple) and key else ""
