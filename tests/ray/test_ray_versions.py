"""The server refuses Ray workers of another maxact version: a worker whose version differs
refuses its shard and the scan fails with one line naming both versions (reducer states of
different versions may not merge exactly)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from maxact.common.version import maxact_version
from maxact.server.jobs.ray_executor import RayCluster
from maxact.server.jobs.ray_worker import WorkerVersionMismatch, version_mismatch
from maxact.server.jobs.shard_work import ShardEvents, ShardResult, ShardTask, ShardWork
from tests.datasets import write_images
from tests.onnx_models import random_cnn, save

pytestmark = pytest.mark.slow


def test_a_worker_of_the_same_version_is_accepted_and_another_one_named_with_both() -> None:
    assert version_mismatch("10.0.0.7", "0.2.0", "0.2.0") is None
    line = version_mismatch("10.0.0.7", "0.1.0", "0.2.0")
    assert line is not None and "\n" not in line
    assert "10.0.0.7" in line and "maxact 0.1.0" in line and "0.2.0" in line


def test_a_ray_scan_on_workers_of_another_version_fails_with_one_line_naming_both_versions(
    tmp_path: Path, ray_cluster: object
) -> None:
    models, data = tmp_path / "models", tmp_path / "data"
    save(random_cnn(3, size=32), models, "net")
    write_images(data / "photos", 4, 32, seed=1)
    ids = [f"img_{i:04d}.png" for i in range(4)]
    # the server claims another version than the one installed on the (local) Ray nodes
    cluster = RayCluster(ray_cluster.address, models, data, device="cpu", version="0.0.0+elsewhere")
    work = ShardWork("scan-1", "net", ["relu_a"], "photos", 2, "image", {}, [])
    task = ShardTask(0, 0, ids, [-1] * len(ids))
    finished: list[ShardResult] = []
    try:
        with pytest.raises(WorkerVersionMismatch) as refused:
            events = ShardEvents(started=lambda shard: None, finished=finished.append)
            cluster.executor().run(work, [task], events, threading.Event())
    finally:
        cluster.close()
    message = str(refused.value)
    assert "\n" not in message
    assert f"runs maxact {maxact_version()}" in message
    assert "this server runs 0.0.0+elsewhere" in message
    assert "install maxact 0.0.0+elsewhere on every Ray node" in message
    assert finished == []
