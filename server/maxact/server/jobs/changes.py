"""When a scan changes: what WatchScan waits for between two reads of the store.

PostgreSQL: every write of a scan's state or progress sends NOTIFY on `CHANNEL` (delivered when
its transaction commits, to every replica); one listening connection per replica wakes the
watchers of that scan at once, and a watcher still re-reads now and then in case a
notification was lost (the listener reconnecting). SQLite: the watchers poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict

import psycopg
from sqlalchemy import URL

log = logging.getLogger("maxact.server")

CHANNEL = "maxact_scans"
POLL_SECONDS = 0.2  # without notifications
FALLBACK_SECONDS = 2.0  # with them: a re-read in case one was missed


class ScanChanges:
    """`await wait(scan_id, ...)` returns when the scan may have changed."""

    def __init__(self, url: URL | None) -> None:
        # the listener's own connection (psycopg, outside SQLAlchemy's pool); None: poll
        self._conninfo = (
            None
            if url is None
            else url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set)
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def wait(self, scan_id: str) -> None:
        if self._conninfo is None:
            await asyncio.sleep(POLL_SECONDS)
            return
        self._start()
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters[scan_id].add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter[1].wait(), FALLBACK_SECONDS)
        finally:
            with self._lock:
                self._waiters[scan_id].discard(waiter)
                if not self._waiters[scan_id]:
                    del self._waiters[scan_id]

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._listen, name="maxact-scan-changes", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _wake(self, scan_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(scan_id, ()))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(event.set)

    def _listen(self) -> None:
        """LISTEN on one connection, reconnecting after a lost database (watchers re-read
        every FALLBACK_SECONDS meanwhile)."""
        assert self._conninfo is not None
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as db:
                    db.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for notice in db.notifies(timeout=1.0):
                            self._wake(notice.payload)
            except psycopg.Error as exc:
                log.debug("scan change listener: %s; reconnecting", exc)
                self._stop.wait(1.0)
