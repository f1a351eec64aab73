"""Overlap inference with reduction: the caller's thread runs onnxruntime, a second thread
reduces the previous batch meanwhile. The queue between them holds at most `depth` batches of
outputs, so memory stays bounded; onnxruntime and numpy both release the GIL.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

Item = TypeVar("Item")
_END = object()


class Overlapped(Generic[Item]):
    """Feed items produced by `produce` (caller's thread) to `consume` (a worker thread)."""

    def __init__(self, consume: Callable[[Item], None], depth: int = 2) -> None:
        self._consume = consume
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="maxact-reduce", daemon=True)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue  # drain so the producer never blocks on a dead consumer
            try:
                self._consume(item)  # type: ignore[arg-type]
            except BaseException as exc:
                self._error = exc

    def run(self, items: Iterable[Item]) -> None:
        """Consume every item, in order; re-raise the consumer's first error here."""
        self._thread.start()
        try:
            for item in items:
                if self._error is not None:
                    break
                self._queue.put(item)
        finally:
            self._queue.put(_END)
            self._thread.join()
        if self._error is not None:
            raise self._error
