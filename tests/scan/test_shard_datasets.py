"""Datasets stored as shards (WebDataset tar, Hugging Face style Parquet) answer exactly like
the same images stored as loose files: persisted scans (top-k, bottom-k, statistics with the
shards' labels), neuron patches byte for byte, and streamed top-k."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

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


def test_parquet_with_a_plain_binary_column_and_no_key_is_keyed_by_row_number(
    tmp_path: Path,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from maxact.server.data.datasets import DatasetCatalog, image_source

    items = labelled_images(5, 8, seed=1, classes=("x",))
    (tmp_path / "plain").mkdir()
    table = pa.table({"jpg": pa.array([data for _, _, data in items], pa.binary())})
    pq.write_table(table, tmp_path / "plain" / "a.parquet", row_group_size=2)
    dataset = DatasetCatalog(tmp_path).open("plain")
    assert dataset.ids == tuple(f"a.parquet/{row:06d}" for row in range(5))
    assert dataset.labels == {}
    with image_source(dataset.root, 3, dataset.ids[3]).open() as image:
        assert image.tobytes() == Image.open(io.BytesIO(items[3][2])).tobytes()


def test_an_unreadable_tar_shard_fails_the_dataset_with_its_name(tmp_path: Path) -> None:
    from maxact.server.data.datasets import DatasetCatalog
    from maxact.server.errors import ServiceError

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "s.tar").write_bytes(b"not a tar file" * 100)
    with pytest.raises(ServiceError, match=r"'s\.tar'"):
        DatasetCatalog(tmp_path).open("broken")
