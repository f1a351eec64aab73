"""The server's caches share one memory budget (`--memory-budget-mb`): under a small one they
evict (one log line says so), /metrics reports the budget and every cache's bytes, and the
answers are the same as under a large budget."""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from maxact.client import Client, MaxactError, Preprocessing
from maxact.server.app import start_server
from maxact.server.ops.memory import BUDGET, CACHE_SHARE
from maxact.server.ops.process import (
    peak_resident_bytes,
    release_free_memory,
    reset_peak_resident,
    resident_bytes,
)
from tests.datasets import write_images
from tests.onnx_models import random_cnn, save
from tests.server.test_memory_growth import LAYER, detector_like_model, metrics

SMALL_MB = 2
MIB = 1024 * 1024


@pytest.fixture
def restored_budget() -> Iterator[None]:
    """The budget is process-wide: give the next tests the one they had."""
    before = BUDGET.total_bytes
    try:
        yield
    finally:
        BUDGET.configure(before)


def _server(root: Path, budget_mb: int) -> Any:
    return start_server(
        root / "models",
        root / "data",
        device="cpu",
        metrics_port=0,
        store=root / f"store-{budget_mb}.sqlite",
        memory_budget_mb=budget_mb,
    )


def _answers(root: Path, budget_mb: int) -> tuple[list[object], dict[str, float]]:
    """Mask-rendered neuron queries over every channel of a scan (layer outputs, decoded
    originals and patches all cached), then the server's metrics."""
    answers: list[object] = []
    with _server(root, budget_mb) as server, Client(server.address, timeout=120) as client:
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


ADMISSION_SIZE = (256, 256)


def _ranking(client: Client, size: tuple[int, int]) -> list[tuple[str, float]]:
    result = client.topk(
        "det", LAYER, 5, dataset="photos", k=4, preprocessing=Preprocessing(size=size)
    ).result()
    return [(patch.hit.image, patch.hit.score) for patch in result.patches]


@pytest.mark.slow  # ~20 s on 2 shared cores
def test_concurrent_requests_whose_working_sets_exceed_the_budget_are_serialised(
    tmp_path: Path, restored_budget: None
) -> None:
    """Four top-k streams at once whose estimated working sets (input batch + activations,
    from the model's shapes at 256 x 256) cannot all fit: the runs in flight never reserve
    more than the budget leaves them, some wait, and every answer equals the answer alone."""
    save(detector_like_model(), tmp_path / "models", "det")
    write_images(tmp_path / "data" / "photos", 4, 256, seed=2)
    with _server(tmp_path, 4096) as server, Client(server.address) as client:
        alone = _ranking(client, ADMISSION_SIZE)
        assert server.metrics_port is not None
        one_run = metrics(server.metrics_port)["maxact_memory_reserved_peak_bytes"]
    assert one_run > 4 * 3 * 256 * 256 * 4  # at least the input batch: from the real shapes
    # room for one run's working set and a half: two at once never fit
    budget_mb = math.ceil(1.5 * one_run / (1 - CACHE_SHARE) / 2**20)
    with _server(tmp_path, budget_mb) as server, Client(server.address) as client:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _ranking(client, ADMISSION_SIZE), range(4)))
        assert server.metrics_port is not None
        values = metrics(server.metrics_port)
    assert answers == [alone] * 4
    work = values["maxact_memory_work_budget_bytes"]
    assert one_run <= work < 2 * one_run
    assert values["maxact_memory_reserved_peak_bytes"] <= work  # never two runs at once
    assert values["maxact_memory_admission_waits_total"] >= 1  # the others waited their turn
    assert values["maxact_memory_reserved_bytes"] == 0  # every reservation released


def test_a_run_larger_than_the_budget_is_refused_naming_the_bound_and_smaller_ones_run(
    tmp_path: Path, restored_budget: None
) -> None:
    save(detector_like_model(), tmp_path / "models", "det")
    write_images(tmp_path / "data" / "photos", 4, 256, seed=2)
    with _server(tmp_path, 2) as server, Client(server.address) as client:
        with pytest.raises(MaxactError) as refused:
            _ranking(client, ADMISSION_SIZE)
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.reason == "WORKING_SET_TOO_LARGE"
        assert "--memory-budget-mb" in refused.value.message
        assert "256x256" in refused.value.message
        with grpc.insecure_channel(server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert len(_ranking(client, (32, 32))) == 4  # a small input fits the same budget
        assert server.metrics_port is not None
        assert metrics(server.metrics_port)["maxact_memory_admission_refusals_total"] >= 1


def test_a_new_session_reserves_what_its_models_last_session_cost_while_it_is_built(
    tmp_path: Path, restored_budget: None
) -> None:
    """Top-k on relu1, then on relu3 (a new layer set: a new onnxruntime session): while the
    second is built, the budget holds what the first cost (its build and first run, as the
    session cache charged it), so the caches make room before it exists."""
    save(detector_like_model(), tmp_path / "models", "det")
    write_images(tmp_path / "data" / "photos", 4, 16, seed=2)
    prep = Preprocessing(size=(16, 16))  # runs of tiny inputs: far less than a session
    with _server(tmp_path, 4096) as server, Client(server.address) as client:
        client.topk("det", "relu1", 0, dataset="photos", k=2, preprocessing=prep).result()
        first_session = server._built.jobs.models.sessions.bytes  # this server's own cache
        # the first build reserved its own (cold) estimate: the runs alone, on the cached session
        BUDGET.configure(BUDGET.total_bytes)  # a new high-water mark
        client.topk("det", "relu1", 1, dataset="photos", k=2, preprocessing=prep).result()
        assert server.metrics_port is not None
        runs_only = metrics(server.metrics_port)["maxact_memory_reserved_peak_bytes"]
        client.topk("det", LAYER, 0, dataset="photos", k=2, preprocessing=prep).result()
        peak = metrics(server.metrics_port)["maxact_memory_reserved_peak_bytes"]
    assert first_session > runs_only  # a session costs more than a run of 4 small images
    assert peak >= first_session


NEW_LAYER_SETS = ("conv0", "conv1", "relu1", "conv2", "relu2", "conv3", "relu3")
HEADROOM_MB = 100  # the budget: the warm server's RSS plus this
# how far the process's peak may go over the budget: what no reservation covers (the client's
# and the test's own buffers in this process, allocator slack). Measured: peaks 21 MB under
# the budget (2 MB over with 70 MB of headroom); the code before sessions were estimated
# before they were built and runs reserved their measured peaks: 198 MB over (220 MB at 70).
TOLERANCE_MB = 32


@pytest.mark.slow  # ~30 s on 2 shared cores
def test_new_layer_sets_one_after_another_under_a_tight_budget_keep_rss_within_it(
    tmp_path: Path, restored_budget: None
) -> None:
    """Seven layer sets of a detector-like model in turn, each a new onnxruntime session
    built and run first at every photo's own input size, under a budget 100 MB above the warm
    server's RSS: each session is estimated before it is built and the caches make room
    first, so the process's peak resident memory (VmHWM) stays within the budget plus a
    tolerance, while sessions are evicted to make that room."""
    if not reset_peak_resident():
        pytest.skip("no resident-memory high-water mark to reset here (/proc/self/clear_refs)")
    save(detector_like_model(), tmp_path / "models", "det")
    photos = tmp_path / "data" / "photos"
    photos.mkdir(parents=True)
    for i in range(6):
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 256, (448, 448 + 64 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    prep = Preprocessing(resize_shorter=448, size_multiple=32)
    with _server(tmp_path, 4096) as server, Client(server.address, timeout=300) as client:
        client.topk("det", "relu0", 0, dataset="photos", k=2, preprocessing=prep).result()
        gc.collect()
        release_free_memory()
        budget_mb = resident_bytes() // MIB + HEADROOM_MB
        BUDGET.configure(budget_mb * MIB)
        reset_peak_resident()
        for layer in NEW_LAYER_SETS:
            client.topk("det", layer, 1, dataset="photos", k=2, preprocessing=prep).result()
        peak_mb = peak_resident_bytes() / MIB
        assert server.metrics_port is not None
        values = metrics(server.metrics_port)
    print(f"budget {budget_mb} MB, peak {peak_mb:.0f} MB ({peak_mb - budget_mb:+.0f} MB)")
    assert peak_mb <= budget_mb + TOLERANCE_MB
    assert values['maxact_cache_evictions_total{cache="sessions"}'] > 0  # the budget bit
