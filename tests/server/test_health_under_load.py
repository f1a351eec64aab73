"""Health is answered promptly while the server is loaded with 64 top-k streams and 2 scans:
every Check well within the container HEALTHCHECK's 3 s. The server is a child process (its
own interpreter), so the load generated here does not share its GIL."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from maxact.client import Client, MaxactError, Preprocessing
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
    rng = np.random.default_rng(0)
    photos = tmp_path / "data" / "photos"
    photos.mkdir(parents=True)
    for i in range(64):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
            photos / f"{i:03d}.png"
        )
    flags = ["--model-root", str(tmp_path / "models"), "--data-root", str(tmp_path / "data")]
    flags += ["--max-running-scans", str(SCANS), "--max-concurrent-rpcs", "256"]
    prep = Preprocessing(size=(SIZE, SIZE))
    stop = threading.Event()
    served = {"streams": 0, "scans": 0}
    with serve_process(*flags) as (_, address):

        def stream(channel: int) -> None:
            with Client(address, timeout=60) as client, contextlib.suppress(MaxactError):
                while not stop.is_set():
                    client.topk(
                        "heavy", "relu3", channel % 32, dataset="photos", k=4, preprocessing=prep
                    ).result()
                    served["streams"] += 1

        def scan() -> None:
            with Client(address, timeout=60) as client, contextlib.suppress(MaxactError):
                while not stop.is_set():
                    info = client.scans.create(
                        "heavy", ["relu1", "relu3"], "photos", k=4, preprocessing=prep
                    )
                    list(client.scans.watch(info.id))
                    served["scans"] += 1

        load = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(STREAMS)]
        load += [threading.Thread(target=scan, daemon=True) for _ in range(SCANS)]
        for worker in load:
            worker.start()
        latencies = []
        try:
            time.sleep(3)  # the load is running
            with grpc.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for _ in range(PROBES):
                    start = time.perf_counter()
                    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
                    latencies.append(time.perf_counter() - start)
                    assert answer.status == health_pb2.HealthCheckResponse.SERVING
                    time.sleep(0.1)
        finally:
            stop.set()
    deadline = time.monotonic() + 30
    for worker in load:  # the server is gone: the calls in flight end (or time out)
        worker.join(max(0.0, deadline - time.monotonic()))
    assert max(latencies) < HEALTHCHECK_TIMEOUT, sorted(latencies)
    assert served["streams"] > 0  # the load was real: streams finished meanwhile
