"""Stopping the engine from another thread ends the scan promptly and leaves no threads behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from maxact.server.scan.engine import EngineCancelled
from maxact.server.scan.layer import ReduceOptions
from tests.onnx_models import heavy_cnn
from tests.scan.helpers import engine, load, sources, write_random_images


def test_stop_ends_the_scan_within_a_second_without_orphan_threads(tmp_path: Path) -> None:
    model = load(heavy_cnn(size=128, depth=6, width=32), tmp_path / "models", "heavy")
    ids = write_random_images(tmp_path / "data", 300, 32)
    scan = engine(model, ["relu5"], 128, ReduceOptions(k=5, position=True))
    outcome: list[BaseException] = []

    def body() -> None:
        try:
            scan.run(sources(tmp_path / "data", ids))
        except BaseException as exc:
            outcome.append(exc)

    before = set(threading.enumerate())
    worker = threading.Thread(target=body)
    worker.start()
    time.sleep(0.5)
    stopped = time.monotonic()
    scan.stop()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert time.monotonic() - stopped < 1.0
    assert len(outcome) == 1 and isinstance(outcome[0], EngineCancelled)
    time.sleep(0.1)
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftover == []


def test_reducers_refuse_to_merge_different_layers(tmp_path: Path) -> None:
    from tests.onnx_models import random_cnn

    model = load(random_cnn(size=32), tmp_path, "random")
    a = engine(model, ["conv_a"], 32, ReduceOptions(k=3))
    b = engine(model, ["relu_b"], 32, ReduceOptions(k=3))
    with pytest.raises(ValueError, match="same layer"):
        a.reducers["conv_a"].merge(b.reducers["relu_b"])
