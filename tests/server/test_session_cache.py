"""Sessions are cached server-wide in an LRU bounded by estimated memory; eviction never
changes answers."""

from __future__ import annotations

import gc
import urllib.request
from pathlib import Path

from maxact.client import Client
from maxact.server.app import start_server
from maxact.server.models.sessions import SessionCache
from tests.datasets import write_images
from tests.onnx_models import random_cnn, save


def test_lru_evicts_least_recently_used_beyond_the_byte_budget() -> None:
    cache = SessionCache(max_bytes=1000)
    made: list[str] = []

    def maker(name: str, size: int):  # type: ignore[no-untyped-def]
        return lambda: (made.append(name) or name, size)

    assert cache.get_or_create("a", maker("a", 200)) == "a"  # cost 400
    assert cache.get_or_create("b", maker("b", 200)) == "b"  # 800
    assert cache.get_or_create("a", maker("a", 200)) == "a"  # hit: a is now most recent
    assert cache.get_or_create("c", maker("c", 200)) == "c"  # 1200 > 1000: evict b
    assert made == ["a", "b", "c"] and cache.bytes == 800
    assert cache.get_or_create("b", maker("b", 200)) == "b"  # recreated; evicts a
    assert made == ["a", "b", "c", "b"]
    assert cache.evict(lambda key: key == "c") == 1 and len(cache) == 1


def test_a_tiny_budget_keeps_one_session_and_answers_stay_equal(tmp_path: Path) -> None:
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    save(random_cnn(seed=4, size=32), model_root, "net")
    write_images(data_root / "d", 12, 32, seed=0)
    answers = {}
    for budget_mb in (1024, 0):
        with (
            start_server(
                model_root, data_root, device="cpu", session_cache_mb=budget_mb, metrics_port=0
            ) as srv,
            Client(srv.address, timeout=60) as client,
        ):
            # the metric adds up every session cache alive in this process: earlier tests'
            # servers are collected first, and what this server adds is counted
            gc.collect()
            assert srv.metrics_port is not None
            before = _metric(srv.metrics_port, 'maxact_cache_entries{cache="sessions"}')
            for _ in range(2):
                for layer in ("conv_a", "pool_a", "relu_b"):
                    result = client.topk("net", layer, 1, dataset="d", k=3).result()
                    hits = [(h.image, h.score, h.unit) for h in result.hits]
                    answers.setdefault(layer, hits)
                    assert hits == answers[layer]
            cached = _metric(srv.metrics_port, 'maxact_cache_entries{cache="sessions"}') - before
            assert cached == (1 if budget_mb == 0 else 3)


def _metric(port: int, name: str) -> float:
    """One sample (its name and labels as exported) of the server's Prometheus metrics, read
    as a scraper would."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        text = page.read().decode("utf-8")
    values = [float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} not exported once: {values}"
    return values[0]
