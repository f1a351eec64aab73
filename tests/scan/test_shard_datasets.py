"""Datasets stored as shards (WebDataset tar, Hugging Face style Parquet) answer exactly like
the same images stored as loose files: persisted scans (top-k, bottom-k, statistics with the
shards' labels), neuron patches byte for byte, and streamed top-k."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from maxact.client import Client
from maxact.server.app import start_server
from tests.onnx_models import random_cnn, save
from tests.scan_results import run_scan, sample_key
from tests.shard_datasets import (
    labelled_images,
    write_loose,
    write_parquet_shards,
    write_tar_shards,
)

CLASSES = ("cat", "dog", "owl")
LAYERS = {"relu_a": 8, "relu_b": 6}
DATASETS = ("loose", "tars", "parquet")


@pytest.fixture(scope="module")
def shard_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("shards")
    save(random_cnn(3, size=32), root / "models", "net")
    items = labelled_images(70, 32, seed=5, classes=CLASSES)
    write_loose(root / "data" / "loose", items)
    write_tar_shards(root / "data" / "tars", items, per_shard=25)
    write_parquet_shards(root / "data" / "parquet", items, per_shard=30, classes=CLASSES)
    with (
        start_server(root / "models", root / "data", device="cpu") as server,
        Client(server.address, timeout=120) as client,
    ):
        yield client


def test_shard_datasets_list_every_sample_with_its_label_as_shard_slash_key(
    shard_client: Client,
) -> None:
    for name in ("tars", "parquet"):
        summary = shard_client.get_dataset(name)
        assert summary.image_count == 70
        assert sorted(summary.labels) == sorted(CLASSES)


def test_tar_and_parquet_scans_equal_the_loose_file_scan_with_byte_identical_patches(
    shard_client: Client,
) -> None:
    answers = {
        name: run_scan(shard_client, "net", LAYERS, name, k=4, patches=True) for name in DATASETS
    }
    assert answers["loose"][("relu_a", "statistics")][1][0][7], "labels reached the statistics"
    assert answers["tars"] == answers["loose"]
    assert answers["parquet"] == answers["loose"]


def test_streamed_topk_over_shards_equals_loose_files_with_byte_identical_patches(
    shard_client: Client,
) -> None:
    def top(dataset: str) -> list:
        result = shard_client.topk("net", "relu_b", 2, dataset=dataset, k=5).result()
        assert result.images_scanned == 70
        return [(sample_key(p.hit.image), p.hit.score, p.hit.box, p.png) for p in result.patches]

    loose = top("loose")
    assert top("tars") == loose
    assert top("parquet") == loose
