"""A server killed with SIGKILL in the middle of a scan resumes it from its last checkpoint on
restart, and the final top-k and statistics equal those of an uninterrupted scan."""

from __future__ import annotations

import signal
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from maxact.client import Client
from maxact.server.app import start_server
from maxact.server.jobs.store import Store
from tests.datasets import write_images
from tests.onnx_models import heavy_cnn, save
from tests.serve_process import serve_process

pytestmark = pytest.mark.slow  # `maxact serve` subprocesses killed and restarted

IMAGES = 400
SIZE = 96  # slow enough that the kill lands well before the scan ends


def _serve(
    model_root: Path, data_root: Path, store: Path, checkpoint_images: int = 32
) -> AbstractContextManager[tuple[subprocess.Popen[str], str]]:
    return serve_process(
        *["--model-root", str(model_root), "--data-root", str(data_root), "--store", str(store)],
        *["--checkpoint-images", str(checkpoint_images)],
    )


def _results(client: Client, scan_id: str) -> tuple[list, list]:
    neurons = []
    for channel in (0, 7, 31):
        for bottom in (False, True):
            _, patches, scanned = client.scans.neuron(
                scan_id, "relu3", channel, bottom=bottom, patches=False
            )
            neurons.append((scanned, [(p.hit.image, p.hit.score, p.hit.unit) for p in patches]))
    stats = client.scans.statistics(scan_id, "relu3")
    return neurons, [
        (c.mean_max, c.max_max, c.firing_rate, c.dead, c.class_mean) for c in stats.channels
    ]


def _checkpointed(store: Path, scan_id: str) -> int:
    """How many of the scan's images its stored checkpoint accounts for (its done shards)."""
    return sum(row.stop - row.first for row in Store(store).shards(scan_id) if row.done)


def _world(tmp_path: Path) -> tuple[Path, Path]:
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    save(heavy_cnn(SIZE), model_root, "heavy")
    write_images(data_root / "photos", IMAGES, SIZE, seed=11, classes=("a", "b", "c"))
    return model_root, data_root


def test_sigkilled_scan_resumes_from_checkpoint_and_equals_an_uninterrupted_scan(
    tmp_path: Path,
) -> None:
    model_root, data_root = _world(tmp_path)
    store = tmp_path / "store.sqlite"

    with _serve(model_root, data_root, store) as (process, address):
        with Client(address, timeout=120) as client:
            scan = client.scans.create("heavy", ["relu3"], "photos", k=5)
            for info in client.scans.watch(scan.id):
                if info.images_done >= 96:
                    break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    killed = Store(store).get(scan.id)
    assert killed is not None and killed.state == "running", "the kill must land mid-scan"
    assert 0 < _checkpointed(store, scan.id) < IMAGES

    with _serve(model_root, data_root, store) as (process, address):
        with Client(address, timeout=120) as client:
            states = [info.state for info in client.scans.watch(scan.id)]
            assert states[-1] == "succeeded"
            assert client.scans.get(scan.id).images_done == IMAGES
            resumed = _results(client, scan.id)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)

    other_store = tmp_path / "other.sqlite"
    with (
        start_server(model_root, data_root, device="cpu", store=other_store) as srv,
        Client(srv.address, timeout=120) as client,
    ):
        again = client.scans.create("heavy", ["relu3"], "photos", k=5)
        assert [info.state for info in client.scans.watch(again.id)][-1] == "succeeded"
        uninterrupted = _results(client, again.id)
    assert resumed == uninterrupted


def test_sigterm_checkpoints_a_running_scan_and_a_restart_finishes_it(tmp_path: Path) -> None:
    """No periodic checkpoint is due (every 100000 images): the one on shutdown keeps the work."""
    model_root, data_root = _world(tmp_path)
    store = tmp_path / "store.sqlite"
    with _serve(model_root, data_root, store, checkpoint_images=100_000) as (process, address):
        with Client(address, timeout=120) as client:
            scan = client.scans.create("heavy", ["relu3"], "photos", k=5)
            for info in client.scans.watch(scan.id):
                if info.images_done >= 64:
                    break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    parked = Store(store).get(scan.id)
    assert parked is not None and parked.state == "queued"  # given back: claimable at once
    assert 64 <= _checkpointed(store, scan.id) < IMAGES
    with (
        _serve(model_root, data_root, store) as (_, address),
        Client(address, timeout=120) as client,
    ):
        assert [info.state for info in client.scans.watch(scan.id)][-1] == "succeeded"
        assert client.scans.get(scan.id).images_done == IMAGES
