"""Every persisted scan runs through one path, and that path reads the decoded-input cache: a
plain local scan of loose files, local scans of tar and Parquet shard datasets, and a scan
planned as several shards (as a Ray server leaves it) resumed by a server without Ray. A
second scan of the same images decodes none of them (every input is a cache hit) and its
answers equal the first's."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from maxact.client import Client
from maxact.server.app import RunningServer, start_server
from maxact.server.jobs.shard_work import shard_ranges
from maxact.server.jobs.store import Store
from tests.onnx_models import random_cnn, save
from tests.scan_results import finish, run_scan, scan_answers, unfinished_copy
from tests.shard_datasets import (
    labelled_images,
    write_loose,
    write_parquet_shards,
    write_tar_shards,
)

CLASSES = ("cat", "dog", "owl")
LAYERS = {"relu_a": 4, "relu_b": 3}
IMAGES = 40
SIZE = 32


def _cache_counts(port: int) -> tuple[float, float]:
    """(hits, misses) of the input cache so far, from the server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    return (
        float(values.get("maxact_input_cache_hits_total", 0)),
        float(values.get("maxact_input_cache_misses_total", 0)),
    )


def _world(root: Path) -> tuple[Path, Path]:
    models, data = root / "models", root / "data"
    save(random_cnn(7, size=SIZE), models, "net")
    items = labelled_images(IMAGES, SIZE, seed=5, classes=CLASSES)
    write_loose(data / "loose", items)
    write_tar_shards(data / "tars", items, per_shard=16)
    write_parquet_shards(data / "parquet", items, per_shard=16, classes=CLASSES)
    return models, data


def _serve(models: Path, data: Path, root: Path) -> RunningServer:
    return start_server(
        models,
        data,
        device="cpu",
        store=root / "store.sqlite",
        cache_dir=root / "cache",
        cache_bytes=10**8,
        metrics_port=0,
    )


def test_second_scans_of_loose_tar_and_parquet_datasets_read_every_input_from_the_cache(
    tmp_path: Path,
) -> None:
    models, data = _world(tmp_path)
    answers = {}
    with _serve(models, data, tmp_path) as server, Client(server.address, timeout=120) as client:
        assert server.metrics_port is not None
        for dataset in ("loose", "tars", "parquet"):
            before = _cache_counts(server.metrics_port)
            first = run_scan(client, "net", LAYERS, dataset, k=4, patches=False)
            middle = _cache_counts(server.metrics_port)
            second = run_scan(client, "net", LAYERS, dataset, k=4, patches=False)
            after = _cache_counts(server.metrics_port)
            # the first scan decodes (and stores) every image, the second decodes none
            assert (middle[0] - before[0], middle[1] - before[1]) == (0, IMAGES), dataset
            assert (after[0] - middle[0], after[1] - middle[1]) == (IMAGES, 0), dataset
            assert second == first, dataset
            answers[dataset] = first
    assert answers["tars"] == answers["loose"]
    assert answers["parquet"] == answers["loose"]


def test_a_scan_planned_as_shards_runs_them_in_the_server_through_the_input_cache(
    tmp_path: Path,
) -> None:
    models, data = _world(tmp_path)
    with _serve(models, data, tmp_path) as server, Client(server.address, timeout=120) as client:
        assert server.metrics_port is not None
        scan = client.scans.create("net", list(LAYERS), "tars", k=4)
        finish(client, scan.id)
        plain = scan_answers(client, scan.id, LAYERS)
        before = _cache_counts(server.metrics_port)  # (the counters are the process's)

    # the same scan again, planned as 5 shards of 8 images (what a Ray server stores)
    store = Store(tmp_path / "store.sqlite")
    sharded = unfinished_copy(store, scan.id)
    store.plan_shards(sharded, shard_ranges(0, IMAGES, 8))

    with _serve(models, data, tmp_path) as server, Client(server.address, timeout=120) as client:
        assert server.metrics_port is not None
        finish(client, sharded)  # resumed at start-up, shard by shard, in this process
        after = _cache_counts(server.metrics_port)
        assert (after[0] - before[0], after[1] - before[1]) == (IMAGES, 0)
        assert client.scans.get(sharded).images_done == IMAGES
        assert scan_answers(client, sharded, LAYERS) == plain
    shards = store.shards(sharded)
    assert len(shards) == 5 and all(row.done and row.attempts == 1 for row in shards)
