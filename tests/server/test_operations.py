"""Operations: Prometheus metrics after a scan, one structured log line per RPC with its request
id, health NOT_SERVING while shutting down."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image

from maxact.client import Client
from maxact.server.app import start_server
from maxact.server.ops.logs import JsonFormatter
from maxact.v1 import model_service_pb2, model_service_pb2_grpc
from tests.health_probe import health_watch
from tests.onnx_models import bright_square_model, save


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    save(bright_square_model(64), model_root, "net")
    (data_root / "squares").mkdir(parents=True)
    for i in range(6):
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        pixels[8 * i : 8 * i + 4, 10:14] = 100 + 20 * i
        Image.fromarray(pixels).save(data_root / "squares" / f"{i}.png")
    return model_root, data_root


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_endpoint_exposes_rpc_and_scan_counters_after_a_scan(
    world: tuple[Path, Path], tmp_path: Path
) -> None:
    model_root, data_root = world
    with (
        start_server(
            model_root, data_root, device="cpu", metrics_port=0, store=tmp_path / "s.sqlite"
        ) as server,
        Client(server.address, timeout=60) as client,
    ):
        before = _metrics(server.metrics_port).get("maxact_images_scanned_total", 0.0)
        client.topk("net", "conv1", 0, dataset="squares", k=2).result()
        scan = client.scans.create("net", ["conv1"], "squares", k=2)
        assert [s.state for s in client.scans.watch(scan.id)][-1] == "succeeded"
        values = _metrics(server.metrics_port)
    assert values["maxact_images_scanned_total"] - before == 12
    labels = (
        'grpc_method="StreamTopK",grpc_service="maxact.v1.TopKService",grpc_type="server_stream"'
    )
    assert values[f"grpc_server_started_total{{{labels}}}"] >= 1
    handled = f'grpc_server_handled_total{{grpc_code="OK",{labels}}}'
    assert values[handled] >= 1
    assert values[f"grpc_server_handling_seconds_count{{{labels}}}"] >= 1
    assert values["process_cpu_seconds_total"] > 0  # prometheus_client's process collector
    assert values["maxact_scans_running"] == 0 and values["maxact_scans_queued"] == 0
    assert values["maxact_scan_images_per_second"] > 0


def test_every_rpc_logs_one_line_with_its_request_id_and_code_as_fields(
    world: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    model_root, data_root = world
    caplog.set_level(logging.INFO, logger="maxact.server.rpc")
    with (
        start_server(model_root, data_root, device="cpu") as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        stub.ListModels(
            model_service_pb2.ListModelsRequest(),
            timeout=10,
            metadata=[("x-request-id", "req-123")],
        )
        with pytest.raises(grpc.RpcError):
            stub.GetModel(model_service_pb2.GetModelRequest(name="nope"), timeout=10)
    formatter = JsonFormatter()
    records = [r for r in caplog.records if r.name == "maxact.server.rpc"]
    lines = [json.loads(formatter.format(r)) for r in records]
    by_method = {line["method"].rsplit("/", 1)[1]: line for line in lines}
    assert by_method["ListModels"]["request_id"] == "req-123"
    assert by_method["ListModels"]["code"] == "OK"
    assert by_method["GetModel"]["code"] == "NOT_FOUND"
    assert len(by_method["GetModel"]["request_id"]) == 16
    assert all(line["ms"] >= 0 for line in lines)


def test_health_turns_not_serving_when_shutdown_begins(world: tuple[Path, Path]) -> None:
    model_root, data_root = world
    server = start_server(model_root, data_root, device="cpu")
    with health_watch(server.address, timeout=30) as statuses:
        server.stop(grace=2)
    assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses


def test_the_container_healthcheck_passes_on_a_serving_server_and_fails_without_one(
    world: tuple[Path, Path],
) -> None:
    from maxact.server import healthcheck

    model_root, data_root = world
    with start_server(model_root, data_root, device="cpu") as server:
        assert healthcheck.main(["--address", server.address]) == 0
        address = server.address
    assert healthcheck.main(["--address", address, "--timeout", "1"]) == 1


def test_the_healthcheck_with_a_missing_tls_certificate_says_so_in_one_line(
    world: tuple[Path, Path], tmp_path: Path
) -> None:
    model_root, data_root = world
    missing = tmp_path / "missing-cert.pem"
    with start_server(model_root, data_root, device="cpu") as server:
        result = subprocess.run(
            [sys.executable, "-m", "maxact.server.healthcheck", "--address", server.address],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MAXACT_TLS_CERT": str(missing)},
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"MAXACT_TLS_CERT {missing}: No such file or directory"
    ]
