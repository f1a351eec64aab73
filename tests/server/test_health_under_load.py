"""Health is answered promptly while the server is loaded with 64 top-k streams and 2 scans:
every Check well within the container HEALTHCHECK's 3 s. The server is a child process (its
own interpreter), so the load generated here does not share its GIL."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.health_load import Load, write_noise_photos
from tests.onnx_models import heavy_cnn, save
from tests.serve_process import serve_process

SIZE = 64
STREAMS = 64
SCANS = 2
PROBES = 30
HEALTHCHECK_TIMEOUT = 3.0  # what the container image's HEALTHCHECK allows


def test_health_answers_within_the_healthcheck_timeout_under_64_streams_and_2_scans(
    tmp_path: Path,
) -> None:
    save(heavy_cnn(size=SIZE, depth=4, width=32), tmp_path / "models", "heavy")
    write_noise_photos(tmp_path / "data" / "photos", 64, SIZE)
    flags = ["--model-root", str(tmp_path / "models"), "--data-root", str(tmp_path / "data")]
    flags += ["--max-running-scans", str(SCANS), "--max-concurrent-rpcs", "256"]
    latencies = []
    with serve_process(*flags) as (_, address):
        load = Load(address, "heavy", "relu3", ("relu1", "relu3"), "photos", SIZE, STREAMS, SCANS)
        with load:
            time.sleep(3)  # the load is running
            with grpc.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for _ in range(PROBES):
                    start = time.perf_counter()
                    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
                    latencies.append(time.perf_counter() - start)
                    assert answer.status == health_pb2.HealthCheckResponse.SERVING
                    time.sleep(0.1)
    load.stop(wait=30)  # the server is gone: the calls in flight end (or time out)
    assert max(latencies) < HEALTHCHECK_TIMEOUT, sorted(latencies)
    assert load.served["streams"] > 0  # the load was real: streams finished meanwhile
