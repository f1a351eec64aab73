"""A responses matrix that does not fit on the disk fails its scan with the reason (not a
crash, not a hang), and the server goes on serving; simulated with a file-size limit on a
real `maxact serve` process (writes past it fail like a full disk)."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from PIL import Image

from maxact.client import Client
from tests.onnx_models import finish, save
from tests.serve_process import serve_process

pytestmark = pytest.mark.slow  # a `maxact serve` subprocess

LIMIT = 1 << 20  # bytes any one file of the server may reach


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_matrix_larger_than_the_disk_allows_fails_the_scan_with_the_reason(
    tmp_path: Path,
) -> None:
    """Layer `flat`: 3 x 32 x 32 = 3072 features; 120 images make a 1.4 MiB matrix."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"])],
        "flat",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 3072])],
    )
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    save(finish(graph), model_root, "flat")
    (data_root / "ds").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(120):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data_root / "ds" / f"{i:03d}.png")
    flags = ["--model-root", str(model_root), "--data-root", str(data_root)]
    store = ["--store", str(tmp_path / "state" / "store.sqlite")]
    with (
        serve_process(*flags, *store, preexec_fn=_limit_file_size) as (_, address),
        Client(address, timeout=60) as client,
    ):
        scan = client.scans.create("flat", ["flat"], "ds", k=1, responses="on")
        final = [info for info in client.scans.watch(scan.id)][-1]
        assert final.state == "failed"
        assert final.failure is not None
        assert final.failure.reason == "RESPONSES_DISK_FULL"
        assert "disk space" in final.failure.message
        assert client.scans.get(scan.id).state == "failed"  # still serving
        assert [m.name for m in client.list_models()] == ["flat"]
    assert not list((tmp_path / "state" / "responses" / scan.id).glob("*.npy"))
