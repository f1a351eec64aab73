"""Persisted scans on a real local Ray cluster (head + 2 nodes on 127.0.0.1) equal local scans
exactly: a labelled dataset with two layers, top-k, bottom-k and statistics; tar and Parquet
shards; a node killed mid-scan; the maxact server SIGKILLed mid-scan and restarted (only the
unfinished shards run again)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxact.client import Client
from maxact.server.app import start_server
from maxact.server.jobs.store import Store
from tests.datasets import write_images
from tests.onnx_models import heavy_cnn, random_cnn, save
from tests.scan_results import finish, run_scan, scan_answers
from tests.serve_process import serve_process
from tests.shard_datasets import (
    labelled_images,
    write_loose,
    write_parquet_shards,
    write_tar_shards,
)

pytestmark = pytest.mark.slow  # a real Ray cluster

CLASSES = ("cat", "dog", "owl")
LAYERS = {"relu_a": 8, "relu_b": 6}
HEAVY_LAYERS = {"relu2": 4, "relu3": 4}  # a few channels of each (32 channels)
HEAVY_IMAGES = 240
HEAVY_SHARD = 16
# big enough that a shard is still running when its node is killed (a shard that finishes
# within the kill delivers its result and nothing needs to run again)
HEAVY_SIZE = 128


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Models, datasets and the answers of LOCAL scans to compare the Ray scans with."""
    root = tmp_path_factory.mktemp("ray-world")
    models, data = root / "models", root / "data"
    save(random_cnn(7, size=32), models, "net")
    save(heavy_cnn(HEAVY_SIZE), models, "heavy")
    items = labelled_images(300, 32, seed=3, classes=CLASSES)
    write_loose(data / "labelled", items)
    write_tar_shards(data / "tars", items[:90], per_shard=40)
    write_parquet_shards(data / "parquet", items[:90], per_shard=40, classes=CLASSES)
    write_loose(data / "small", items[:90])
    write_images(data / "slow", HEAVY_IMAGES, HEAVY_SIZE, seed=9, classes=CLASSES)
    with (
        start_server(models, data, device="cpu") as server,
        Client(server.address, timeout=300) as client,
    ):
        local = {
            "labelled": run_scan(client, "net", LAYERS, "labelled", k=6, patches=False),
            "small": run_scan(client, "net", LAYERS, "small", k=4, patches=True),
            "slow": run_scan(client, "heavy", HEAVY_LAYERS, "slow", k=5, patches=False),
        }
    return {"models": models, "data": data, "root": root, "local": local}


@pytest.fixture(scope="module")
def ray_client(world: dict, ray_cluster: object) -> Iterator[Client]:
    with (
        start_server(
            world["models"],
            world["data"],
            device="cpu",
            ray_address=ray_cluster.address,
            shard_images=16,
            store=world["root"] / "ray.sqlite",
        ) as server,
        Client(server.address, timeout=300) as client,
    ):
        yield client


def _shards_done(store: Path, scan_id: str) -> int:
    return sum(row.done for row in Store(store).shards(scan_id))


@pytest.mark.parametrize("resume_on_ray", [True, False], ids=["on-ray", "without-ray"])
def test_sigkilled_server_resumes_the_ray_scan_running_only_unfinished_shards(
    world: dict, ray_cluster: object, resume_on_ray: bool
) -> None:
    """Restarted with the same flags, or without Ray (its shards then run in the server)."""
    store = world["root"] / f"restart-{resume_on_ray}.sqlite"
    local_flags = [
        *["--model-root", str(world["models"]), "--data-root", str(world["data"])],
        *["--store", str(store), "--shard-images", str(HEAVY_SHARD)],
    ]
    flags = [*local_flags, "--ray-address", ray_cluster.address]
    with serve_process(*flags) as (process, address):
        with Client(address, timeout=300) as client:
            scan = client.scans.create("heavy", list(HEAVY_LAYERS), "slow", k=5)
            deadline = time.monotonic() + 240
            while _shards_done(store, scan.id) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    before = {row.shard: row for row in Store(store).shards(scan.id)}
    finished_before = {shard for shard, row in before.items() if row.done}
    assert 2 <= len(finished_before) < len(before), "the kill must land mid-scan"

    with serve_process(*(flags if resume_on_ray else local_flags)) as (process, address):
        with Client(address, timeout=300) as client:
            finish(client, scan.id)
            assert client.scans.get(scan.id).images_done == HEAVY_IMAGES
            resumed = scan_answers(client, scan.id, HEAVY_LAYERS)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    after = {row.shard: row for row in Store(store).shards(scan.id)}
    assert all(row.done for row in after.values())
    for shard in finished_before:  # never sent to a worker again
        assert after[shard] == before[shard]
    assert resumed == world["local"]["slow"]


def test_ray_scan_of_a_labelled_dataset_equals_the_local_scan_exactly(
    world: dict, ray_client: Client
) -> None:
    scan = ray_client.scans.create("net", list(LAYERS), "labelled", k=6)
    finish(ray_client, scan.id)
    assert ray_client.scans.get(scan.id).images_done == 300
    assert scan_answers(ray_client, scan.id, LAYERS) == world["local"]["labelled"]


def test_ray_scans_of_tar_and_parquet_shards_equal_loose_files_with_identical_patches(
    world: dict, ray_client: Client
) -> None:
    for dataset in ("tars", "parquet"):
        answers = run_scan(ray_client, "net", LAYERS, dataset, k=4, patches=True)
        assert answers == world["local"]["small"], dataset


def test_cancelling_a_ray_scan_stops_its_workers_and_records_no_more_shards(
    world: dict, ray_client: Client
) -> None:
    scan = ray_client.scans.create("heavy", list(HEAVY_LAYERS), "slow", k=5)
    for info in ray_client.scans.watch(scan.id):
        if info.images_done >= HEAVY_SHARD:
            break
    assert ray_client.scans.cancel(scan.id).state == "cancelled"
    store = Store(world["root"] / "ray.sqlite")
    done = [row.shard for row in store.shards(scan.id) if row.done]
    time.sleep(1.0)
    assert [row.shard for row in store.shards(scan.id) if row.done] == done
    assert len(done) < HEAVY_IMAGES // HEAVY_SHARD
    assert ray_client.scans.get(scan.id).state == "cancelled"


def test_killing_a_ray_node_mid_scan_retries_its_shard_and_equals_the_local_scan(
    world: dict, ray_cluster: object, ray_client: Client
) -> None:
    scan = ray_client.scans.create("heavy", list(HEAVY_LAYERS), "slow", k=5)
    for info in ray_client.scans.watch(scan.id):
        if info.images_done >= HEAVY_SHARD:
            break
    victim = next(iter(ray_cluster.worker_nodes))
    ray_cluster.remove_node(victim, allow_graceful=False)
    assert ray_client.scans.get(scan.id).images_done < HEAVY_IMAGES, "killed mid-scan"
    finish(ray_client, scan.id)
    shards = Store(world["root"] / "ray.sqlite").shards(scan.id)
    assert any(row.attempts == 2 for row in shards), "the lost worker's shard ran again"
    assert scan_answers(ray_client, scan.id, HEAVY_LAYERS) == world["local"]["slow"]
