"""The responses matrix of a scan on a real local Ray cluster: each shard's block travels
with its result and is written where the server merges; the matrix and everything answered
from it equal plain onnxruntime and the independent computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxact.client import Client
from maxact.server.app import start_server
from tests.responses_world import (
    CLASSES,
    LAYERS,
    check_against_oracles,
    dataset_order,
    oracle_matrix,
    write_world,
)

pytestmark = pytest.mark.slow  # a real Ray cluster


def test_a_ray_scan_keeps_the_exact_responses_matrix_of_every_shard(
    tmp_path: Path, ray_cluster: object
) -> None:
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    write_world(model_root, data_root, per_class=10)
    with (
        start_server(
            model_root,
            data_root,
            device="cpu",
            ray_address=ray_cluster.address,  # type: ignore[attr-defined]
            shard_images=7,  # 30 images: 5 shards, the last one shorter
            store=tmp_path / "state" / "store.sqlite",
        ) as server,
        Client(server.address, timeout=300) as client,
    ):
        scan = client.scans.create("faces", list(LAYERS), "faces", k=4)
        assert [info.state for info in client.scans.watch(scan.id)][-1] == "succeeded"
        ids, labels = dataset_order(data_root)
        for layer in LAYERS:
            out = tmp_path / f"{layer}.npy"
            client.responses.export(scan.id, layer, out, tmp_path / "ids.txt")
            matrix = np.load(out)
            np.testing.assert_allclose(matrix, oracle_matrix(data_root, layer), atol=1e-6)
            assert (tmp_path / "ids.txt").read_text().splitlines() == ids
            check_against_oracles(client, scan.id, layer, matrix, labels, 4, CLASSES)
        assert client.responses.labels(scan.id, "relu", [0])[0].label == "face"
