"""Cancelling a top-k stream stops the server's work promptly: no scan thread a second later."""

from __future__ import annotations

from pathlib import Path

from maxact.client import Client, Progress
from tests.datasets import slow_scan
from tests.threads import scan_threads, scan_threads_after


def test_cancel_stops_scan_threads_within_a_second(
    client: Client, model_root: Path, data_root: Path
) -> None:
    slow_scan(model_root, data_root, 300)

    stream = client.topk("heavy", "relu5", 0, dataset="many", k=5)
    for event in stream:
        if isinstance(event, Progress) and event.images_done > 0:
            break
    assert scan_threads(), "the scan should be running"
    stream.cancel()
    assert scan_threads_after(1.0) == []
    # and the server still answers
    assert [m.name for m in client.list_models()] == ["heavy"]
