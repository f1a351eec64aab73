"""The responses matrix after a SIGKILL mid-scan and a resume: rows written before each
checkpoint, the rest scanned again, so the matrix and everything answered from it equal plain
onnxruntime and an uninterrupted scan."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client
from maxact.server.app import start_server
from tests.datasets import write_images
from tests.onnx_models import heavy_cnn, layer_outputs, save
from tests.responses_world import check_against_oracles
from tests.serve_process import serve_process

pytestmark = pytest.mark.slow  # `maxact serve` subprocesses killed and restarted

IMAGES = 300
SIZE = 96
CLASSES = ("a", "b", "c")
LAYER = "relu2"


def _oracle(data_root: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    root = data_root / "photos"
    ids = sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
    images = np.stack([np.asarray(Image.open(root / i).convert("RGB")) for i in ids])
    inputs = (images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)
    maps = layer_outputs(heavy_cnn(SIZE), [LAYER], inputs)[LAYER]
    labels = np.asarray([CLASSES.index(i.split("/")[0]) for i in ids])
    return ids, maps.max(axis=(2, 3)), labels


def test_a_sigkilled_scan_resumes_to_the_exact_responses_matrix(tmp_path: Path) -> None:
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    save(heavy_cnn(SIZE), model_root, "heavy")
    write_images(data_root / "photos", IMAGES, SIZE, seed=5, classes=CLASSES)
    store = tmp_path / "state" / "store.sqlite"
    flags = ["--model-root", str(model_root), "--data-root", str(data_root), "--store", str(store)]
    with serve_process(*flags, "--checkpoint-images", "32") as (process, address):
        with Client(address, timeout=120) as client:
            scan = client.scans.create("heavy", [LAYER], "photos", k=5)
            for info in client.scans.watch(scan.id):
                if info.images_done >= 64:
                    break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    with serve_process(*flags) as (process, address):
        with Client(address, timeout=120) as client:
            states = [info.state for info in client.scans.watch(scan.id)]
            assert states[-1] == "succeeded" and states[0] != "succeeded", "killed mid-scan"
            client.responses.export(scan.id, LAYER, tmp_path / "r.npy", tmp_path / "ids.txt")
            ids, expected, labels = _oracle(data_root)
            resumed = np.load(tmp_path / "r.npy")
            np.testing.assert_allclose(resumed, expected, rtol=1e-5, atol=1e-6)
            assert (tmp_path / "ids.txt").read_text().splitlines() == ids
            check_against_oracles(client, scan.id, LAYER, resumed, labels, 5, CLASSES)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    with (
        start_server(model_root, data_root, device="cpu", store=tmp_path / "o" / "s.db") as srv,
        Client(srv.address, timeout=120) as client,
    ):
        again = client.scans.create("heavy", [LAYER], "photos", k=5)
        assert [info.state for info in client.scans.watch(again.id)][-1] == "succeeded"
        client.responses.export(again.id, LAYER, tmp_path / "u.npy")
    np.testing.assert_array_equal(resumed, np.load(tmp_path / "u.npy"))
