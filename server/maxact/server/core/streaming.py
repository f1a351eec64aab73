"""The bridge between a blocking scan thread and an async iterator, in one place.

A scan runs in its own named thread ("maxact-scan-N"); what it emits crosses into the event
loop through an asyncio queue. When the consumer goes away (the client cancelled), the
iterator's finally stops the body (between batches and inside a running inference) and joins
the thread, so no work outlives the call. `BlockingPull` is the other direction: the scan
thread reads what the client streams. `throttled` caps how often progress is sent;
`poll_changes` is the same idea for watching a scan, which reads the store instead of a
thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from maxact.server.scan.neuron import ScanCancelled

T = TypeVar("T")
_scan_numbers = itertools.count(1)
_DONE = object()
# Scan threads of dataset streams running at once per server: each brings decode threads and
# an inference, so 64 streams at once on 2 cores would be hundreds of threads taking turns at
# the GIL, and the event loop (health checks, every other call) would wait behind them.
# Streams beyond this wait (cancellable, costing nothing) for a slot.
STREAM_SLOTS = 2 * (os.cpu_count() or 1)
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def stream_slots() -> asyncio.Semaphore:
    """This server's (event loop's) slots for dataset streams."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(STREAM_SLOTS)
    return slots


def throttled(
    send: Callable[[int, int, int], None], interval: float = 0.1
) -> Callable[[int, int, int], None]:
    """At most one progress message per interval (the final one is sent separately)."""
    last = [0.0]

    def maybe_send(done: int, total: int, failed: int) -> None:
        now = time.monotonic()
        if now - last[0] >= interval:
            last[0] = now
            send(done, total, failed)

    return maybe_send


async def run_in_thread(
    body: Callable[[Callable[[Any], None]], None],
    stopper: Callable[[], None] | None = None,
) -> AsyncIterator[Any]:
    """Run `body(emit)` in a named thread and yield what it emits, until it returns.

    Cancelling the consumer stops the body (via `stopper`) and joins the thread.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def emit(item: Any) -> None:
        # RuntimeError: the server's loop already closed (shutdown), so nobody listens
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def target() -> None:
        try:
            body(emit)
        except ScanCancelled:
            pass
        except BaseException as exc:
            emit(exc)
        finally:
            emit(_DONE)

    thread = threading.Thread(target=target, name=f"maxact-scan-{next(_scan_numbers)}", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if thread.is_alive():
            if stopper is not None:
                stopper()
            await asyncio.to_thread(thread.join)


async def poll_changes(
    read: Callable[[], T],
    key: Callable[[T], Hashable],
    finished: Callable[[T], bool],
    interval: float,
    changed: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[T]:
    """Yield `read()` (run in a thread) whenever its `key` changed, until `finished`; between
    reads, wait `interval` seconds, or for `changed()` when given (a change notification)."""
    last: Hashable = object()
    while True:
        value = await asyncio.to_thread(read)
        if key(value) != last:
            last = key(value)
            yield value
        if finished(value):
            return
        if changed is not None:
            await changed()
        else:
            await asyncio.sleep(interval)


async def _next_or_none(source: AsyncIterator[T]) -> T | None:
    try:
        return await anext(source)
    except StopAsyncIteration:
        return None


class BlockingPull(Generic[T]):
    """Read a request stream (an async iterator of the event loop) from a worker thread, one
    message at a time and only when asked: gRPC flow control then holds the client back, so
    nothing is buffered beyond what the reader asked for. `stop()` from any thread ends it,
    also while it waits for the client's next message."""

    def __init__(self, source: AsyncIterator[T], loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._loop = loop
        self._pending: concurrent.futures.Future[T | None] | None = None
        self._stopped = threading.Event()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def next(self) -> T | None:
        """The next message (None at the end of the stream or once stopped)."""
        if self._stopped.is_set():
            return None
        try:
            future = asyncio.run_coroutine_threadsafe(_next_or_none(self._source), self._loop)
        except RuntimeError:  # the server's loop is closed: shutting down
            return None
        self._pending = future
        if self._stopped.is_set():  # stop() may have run before _pending was set
            future.cancel()
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            return None
        finally:
            self._pending = None

    def stop(self) -> None:
        self._stopped.set()
        pending = self._pending
        if pending is not None:
            pending.cancel()
