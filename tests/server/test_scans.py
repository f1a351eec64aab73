"""Persisted scans through the real server: create / watch / get / list / cancel, neuron queries
that equal a live top-k, statistics that name dead and selective channels."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from maxact.client import Client, MaxactError
from tests.datasets import slow_scan
from tests.onnx_models import bright_square_model, save


def _labelled_squares(root: Path) -> None:
    """Class folders: 'bright' images carry a bright square, 'dark' ones a faint one."""
    rng = np.random.default_rng(2)
    for i in range(24):
        label = "bright" if i % 2 == 0 else "dark"
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        y, x = 2 * rng.integers(0, 30, size=2)
        pixels[y : y + 4, x : x + 4] = 200 + i if label == "bright" else 10 + i
        path = root / label / f"img_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


@pytest.fixture
def squares(client: Client, model_root: Path, data_root: Path) -> Client:
    save(bright_square_model(64), model_root, "net")
    _labelled_squares(data_root / "labelled")
    return client


def _finished(client: Client, scan_id: str) -> str:
    states = [info.state for info in client.scans.watch(scan_id)]
    assert states[-1] in ("succeeded", "failed", "cancelled")
    return states[-1]


def test_scan_lifecycle_create_watch_get_list(squares: Client) -> None:
    created = squares.scans.create("net", ["conv1", "relu1"], "labelled", k=5)
    assert created.state in ("queued", "running") and created.images_total == 24
    assert _finished(squares, created.id) == "succeeded"
    info = squares.scans.get(created.id)
    assert (info.images_done, info.images_failed, info.layers) == (24, 0, ("conv1", "relu1"))
    assert created.id in [scan.id for scan in squares.scans.list(page_size=1)]


def test_neuron_query_equals_a_live_topk_stream_including_patch_bytes(squares: Client) -> None:
    scan = squares.scans.create("net", ["conv1", "pool1"], "labelled", k=6)
    assert _finished(squares, scan.id) == "succeeded"
    for layer, channel, bottom in [("conv1", 0, False), ("pool1", 0, False), ("conv1", 1, True)]:
        _, patches, scanned = squares.scans.neuron(scan.id, layer, channel, bottom=bottom)
        live = squares.topk("net", layer, channel, dataset="labelled", k=6, bottom=bottom)
        expected = live.result()
        assert scanned == expected.images_scanned == 24
        assert [p.hit.image for p in patches] == [h.image for h in expected.hits]
        assert [p.hit.score for p in patches] == [h.score for h in expected.hits]
        assert [p.hit.box for p in patches] == [h.box for h in expected.hits]
        assert [p.png for p in patches] == [p.png for p in expected.patches]


def test_statistics_name_dead_and_class_selective_channels(squares: Client) -> None:
    scan = squares.scans.create("net", ["relu1"], "labelled", k=4)
    assert _finished(squares, scan.id) == "succeeded"
    stats = squares.scans.statistics(scan.id, "relu1")
    bright, negative = stats.channels
    assert stats.images_scanned == 24
    assert negative.dead and negative.firing_rate == 0.0  # relu of a negative filter
    assert not bright.dead and bright.firing_rate == 1.0
    assert bright.preferred_class == "bright" and bright.selectivity > 0.8
    assert bright.top_class_histogram == {"bright": 4}
    assert stats.top_channels_per_class["bright"] == (0,)


def test_cancelled_scan_refuses_neuron_queries(
    client: Client, model_root: Path, data_root: Path
) -> None:
    slow_scan(model_root, data_root, 200)
    scan = client.scans.create("heavy", ["relu5"], "many", k=3)
    for info in client.scans.watch(scan.id):
        if info.images_done > 0:
            break
    assert client.scans.cancel(scan.id).state == "cancelled"
    assert client.scans.get(scan.id).state == "cancelled"
    with pytest.raises(MaxactError) as caught:
        client.scans.neuron(scan.id, "relu5", 0)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "SCAN_NOT_FINISHED"


def test_bad_scan_requests_fail_at_once_with_the_culprit_named(squares: Client) -> None:
    cases = [
        (lambda: squares.scans.get("scans/nope"), grpc.StatusCode.NOT_FOUND, "SCAN_NOT_FOUND"),
        (
            lambda: squares.scans.create("net", ["conv9"], "labelled"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "LAYER_NOT_FOUND",
        ),
        (
            lambda: squares.scans.create("net", ["conv1"], "nope"),
            grpc.StatusCode.NOT_FOUND,
            "DATASET_NOT_FOUND",
        ),
        (
            lambda: squares.scans.create("nope", ["conv1"], "labelled"),
            grpc.StatusCode.NOT_FOUND,
            "MODEL_NOT_FOUND",
        ),
    ]
    for call, code, reason in cases:
        with pytest.raises(MaxactError) as caught:
            call()
        assert (caught.value.code, caught.value.reason) == (code, reason)


def test_a_cancelled_scan_stays_cancelled_whatever_its_worker_was_doing(
    squares: Client,
) -> None:
    """Cancel right after create, many times: the worker may be loading, preparing or running;
    the scan must end cancelled (never flip back to running or succeeded) and watch must end."""
    for _ in range(15):
        scan = squares.scans.create("net", ["conv1", "relu1"], "labelled", k=3)
        assert squares.scans.cancel(scan.id).state in ("cancelled", "succeeded")
        final = [info.state for info in squares.scans.watch(scan.id)][-1]
        assert final == squares.scans.get(scan.id).state
        assert final in ("cancelled", "succeeded")
