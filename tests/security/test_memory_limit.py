"""The amplification cases of reproduction 1 against a real `maxact serve` process whose address
space the test limits (RLIMIT_AS, set in the child before it starts): every one is refused or
skipped before it allocates, the process survives, and it still answers a known top-k."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from maxact.client import Client, MaxactError, Preprocessing
from tests.onnx_models import bright_square_model, save
from tests.security.robust_helpers import dynamic_model, png_bytes
from tests.serve_process import serve_process

pytestmark = pytest.mark.slow  # `maxact serve` subprocesses

# Enough for the server and a small scan (about 1.3 GB of address space idle, with two malloc
# arenas); far too little for any of the amplification cases (2 GB to tens of GB each).
ADDRESS_SPACE = 2560 * 1024 * 1024


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _refused_or_skipped(call) -> str:  # type: ignore[no-untyped-def]
    try:
        result = call()
    except MaxactError as error:
        assert error.code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ), str(error)
        return error.reason
    assert result.skipped, "the amplified image was scanned"
    return "SKIPPED"


def test_amplification_cases_under_a_memory_limit_leave_the_server_alive(tmp_path: Path) -> None:
    models, data = tmp_path / "models", tmp_path / "data"
    save(dynamic_model(), models, "dyn")
    save(bright_square_model(64), models, "net")
    save(bright_square_model(64), models, "thin")
    (models / "thin.preprocess.json").write_text(json.dumps({"resize_shorter": 256}))
    (data / "ds").mkdir(parents=True)
    for i, value in enumerate((40, 200, 120)):
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(data / "ds" / f"img_{i}.png")

    flags = ["--model-root", str(models), "--data-root", str(data)]
    flags += ["--store", str(tmp_path / "store.sqlite")]
    # two malloc arenas: see ADDRESS_SPACE
    limited = serve_process(*flags, env={"MALLOC_ARENA_MAX": "2"}, preexec_fn=_limit_address_space)
    with limited as (process, address), Client(address, timeout=120) as client:
        huge_crop = Preprocessing(resize_shorter=16384, center_crop=(224, 224))
        cases = {
            "resize_shorter": lambda: client.topk(
                "dyn", "relu1", 0, dataset="ds", preprocessing=huge_crop
            ).result(),
            "thin image": lambda: client.topk_images(
                "thin", "conv1", 0, [("thin.png", png_bytes(16000, 1))]
            ).result(),
            "rf size": lambda: client.receptive_field("dyn", "relu1", size=(10000, 10000)),
            "scan size": lambda: client.topk(
                "dyn", "relu1", 0, dataset="ds", preprocessing=Preprocessing(size=(4096, 4096))
            ).result(),
            "persisted": lambda: client.scans.create(
                "dyn", ["relu1"], "ds", preprocessing=huge_crop
            ),
        }
        outcomes = {name: _refused_or_skipped(call) for name, call in cases.items()}
        assert outcomes == {
            "resize_shorter": "INPUT_TOO_LARGE",
            "thin image": "SKIPPED",
            "rf size": "INPUT_TOO_LARGE",
            "scan size": "INPUT_TOO_LARGE",
            "persisted": "INPUT_TOO_LARGE",
        }
        assert process.poll() is None, "the server died"
        health = health_pb2_grpc.HealthStub(client._channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        result = client.topk("net", "conv1", 0, dataset="ds", k=2).result()
        assert [hit.image for hit in result.hits] == ["img_1.png", "img_2.png"]
        assert [hit.score for hit in result.hits] == pytest.approx([200 / 255, 120 / 255])
