"""Cancelling a top-k stream stops the server's work promptly: no scan thread a second later."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from maxact.client import Client, Progress
from tests.datasets import slow_scan


def _scan_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("maxact-scan")]


def test_cancel_stops_scan_threads_within_a_second(
    client: Client, model_root: Path, data_root: Path
) -> None:
    slow_scan(model_root, data_root, 300)

    stream = client.topk("heavy", "relu5", 0, dataset="many", k=5)
    for event in stream:
        if isinstance(event, Progress) and event.images_done > 0:
            break
    assert _scan_threads(), "the scan should be running"
    stream.cancel()
    deadline = time.monotonic() + 1.0
    while _scan_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _scan_threads() == []
    # and the server still answers
    assert [m.name for m in client.list_models()] == ["heavy"]
