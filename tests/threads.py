"""The server's scan threads (named maxact-scan*), for tests that a cancel really stops the work."""

from __future__ import annotations

import threading
import time


def scan_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("maxact-scan")]


def scan_threads_after(seconds: float) -> list[str]:
    """The scan threads still alive once they are all gone or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while scan_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return scan_threads()
