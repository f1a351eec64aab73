"""Cancelling a top-k stream stops the server's work promptly: no scan thread a second later."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from maxact.client import Client, Progress
from tests.onnx_models import heavy_cnn, save


def _scan_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("maxact-scan")]


def test_cancel_stops_scan_threads_within_a_second(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(heavy_cnn(128), model_root, "heavy")
    dataset = data_root / "many"
    dataset.mkdir()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    for i in range(300):
        image.save(dataset / f"img_{i:04d}.png")

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
