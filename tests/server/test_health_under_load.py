"""Health is answered promptly while the server is loaded with 64 top-k streams and 2 scans:
every Check on the main port well within the container HEALTHCHECK's 3 s, every Check on the
--health-port process within a Kubernetes gRPC probe's default 1 s. The server is a child
process (its own interpreter), so the load generated here does not share its GIL."""

from __future__ import annotations

import re
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
PROBE_TIMEOUT = 1.0  # a Kubernetes gRPC probe's default timeoutSeconds


def _check(stub: health_pb2_grpc.HealthStub) -> float:
    """One Check that must say SERVING; its round trip in seconds."""
    start = time.perf_counter()
    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    return time.perf_counter() - start


def test_health_answers_within_the_probe_timeouts_under_64_streams_and_2_scans(
    tmp_path: Path,
) -> None:
    save(heavy_cnn(size=SIZE, depth=4, width=32), tmp_path / "models", "heavy")
    write_noise_photos(tmp_path / "data" / "photos", 64, SIZE)
    flags = ["--model-root", str(tmp_path / "models"), "--data-root", str(tmp_path / "data")]
    flags += ["--max-running-scans", str(SCANS), "--max-concurrent-rpcs", "256"]
    flags += ["--health-port", "0"]
    main_port, health_port = [], []
    ready: list[str] = []
    with serve_process(*flags, ready=ready) as (_, address):
        found = re.search(r"health on (127\.0\.0\.1:\d+)", ready[0])
        assert found, ready[0]
        load = Load(address, "heavy", "relu3", ("relu1", "relu3"), "photos", SIZE, STREAMS, SCANS)
        with (
            load,
            grpc.insecure_channel(address) as main_channel,
            grpc.insecure_channel(found.group(1)) as health_channel,
        ):
            time.sleep(3)  # the load is running
            main_stub = health_pb2_grpc.HealthStub(main_channel)
            health_stub = health_pb2_grpc.HealthStub(health_channel)
            for _ in range(PROBES):
                main_port.append(_check(main_stub))
                health_port.append(_check(health_stub))
                time.sleep(0.1)
    load.stop(wait=30)  # the server is gone: the calls in flight end (or time out)
    assert max(main_port) < HEALTHCHECK_TIMEOUT, sorted(main_port)
    assert max(health_port) < PROBE_TIMEOUT, sorted(health_port)
    assert load.served["streams"] > 0  # the load was real: streams finished meanwhile
