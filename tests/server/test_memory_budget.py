"""The server's caches share one memory budget (`--memory-budget-mb`): under a small one they
evict (one log line says so), /metrics reports the budget and every cache's bytes, and the
answers are the same as under a large budget."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxact.client import Client, Preprocessing
from maxact.server.app import start_server
from maxact.server.ops.memory import BUDGET, CACHE_SHARE
from tests.datasets import write_images
from tests.onnx_models import random_cnn, save
from tests.server.test_memory_growth import metrics

SMALL_MB = 2


@pytest.fixture
def restored_budget() -> Iterator[None]:
    """The budget is process-wide: give the next tests the one they had."""
    before = BUDGET.total_bytes
    try:
        yield
    finally:
        BUDGET.configure(before)


def _answers(root: Path, budget_mb: int) -> tuple[list[object], dict[str, float]]:
    """Mask-rendered neuron queries over every channel of a scan (layer outputs, decoded
    originals and patches all cached), then the server's metrics."""
    answers: list[object] = []
    with (
        start_server(
            root / "models",
            root / "data",
            device="cpu",
            metrics_port=0,
            store=root / f"store-{budget_mb}.sqlite",
            memory_budget_mb=budget_mb,
        ) as server,
        Client(server.address, timeout=120) as client,
    ):
        prep = Preprocessing(size=(32, 32))
        scan = client.scans.create("net", ["relu_b"], "photos", k=4, preprocessing=prep)
        assert [s.state for s in client.scans.watch(scan.id)][-1] == "succeeded"
        for channel in range(4):
            for render in ("mask", "rf"):
                _, patches, _ = client.scans.neuron(scan.id, "relu_b", channel, k=4, render=render)
                answers.append([(p.hit.image, p.hit.score, p.hit.box, p.png) for p in patches])
        assert server.metrics_port is not None
        return answers, metrics(server.metrics_port)


def test_caches_stay_within_a_small_budget_log_their_evictions_and_answer_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, restored_budget: None
) -> None:
    save(random_cnn(seed=3, size=32), tmp_path / "models", "net")
    write_images(tmp_path / "data" / "photos", 12, 320, seed=1)  # 300 KB decoded each
    large, _ = _answers(tmp_path, 4096)
    with caplog.at_level(logging.INFO, logger="maxact.server"):
        small, values = _answers(tmp_path, SMALL_MB)
    assert small == large
    assert values["maxact_memory_budget_bytes"] == SMALL_MB * 2**20
    share = values["maxact_memory_cache_budget_bytes"]
    assert share == int(SMALL_MB * 2**20 * CACHE_SHARE)
    # sessions keep their newest entry whatever the budget; the other caches fit the rest
    others = [
        value
        for name, value in values.items()
        if name.startswith("maxact_cache_bytes{") and 'cache="sessions"' not in name
    ]
    assert others and sum(others) <= share
    assert values['maxact_cache_evictions_total{cache="decoded_originals"}'] > 0
    assert any(
        "evicted" in r.getMessage() and "under pressure" in r.getMessage() for r in caplog.records
    )
