"""Health latency under load: grpc.health.v1 Check round trips while the server streams 64
top-k requests and runs 2 scans (the container HEALTHCHECK gives up after 3 s, a Kubernetes
gRPC probe after 1 s by default), on the main port and on the --health-port process, in the
same run.

The server is a `maxact serve` child process on 127.0.0.1 (its own GIL) started with
`--health-port 0`; the load comes from threads of this process (the same load as
tests/server/test_health_under_load.py, from tests/health_load.py); each port has its own
probe process (one channel, a Check every 50 ms), running at the same time, so neither the
load nor a probe shares an interpreter with what it measures.

Usage: python bench/health_bench.py [--seconds 30] [--streams 64] [--scans 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's tests/ helpers
from tests.health_load import Load, write_noise_photos
from tests.onnx_models import heavy_cnn, save

SIZE = 64
PROBE = r"""
import json, sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
address, seconds = sys.argv[1], float(sys.argv[2])
latencies, failures = [], 0
with grpc.insecure_channel(address) as channel:
    stub = health_pb2_grpc.HealthStub(channel)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            latencies.append(time.perf_counter() - start)
        except grpc.RpcError:
            failures += 1
        time.sleep(0.05)
print(json.dumps({"latencies": latencies, "failures": failures}))
"""


def _serve(work: Path) -> tuple[subprocess.Popen[str], str, str]:
    """The server process, its address and its health process's address."""
    command = [sys.executable, "-m", "maxact.server", "--port", "0", "--device", "cpu"]
    command += ["--http-port", "0", "--health-port", "0"]
    command += ["--model-root", str(work / "models"), "--data-root", str(work / "data")]
    command += ["--store", str(work / "store.sqlite"), "--max-running-scans", "2"]
    command += ["--max-concurrent-rpcs", "256"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"serving on (\S+):(\d+) .*\(health on \S+:(\d+)\)", line)
        if found:
            host = found.group(1)
            return process, f"{host}:{found.group(2)}", f"{host}:{found.group(3)}"
    raise RuntimeError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--scans", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maxact-health-bench-"))
    save(heavy_cnn(size=SIZE, depth=4, width=32), work / "models", "load")
    write_noise_photos(work / "data" / "photos", 96, SIZE)
    process, address, health = _serve(work)
    layers = ("relu1", "relu3")
    load = Load(address, "load", "relu3", layers, "photos", SIZE, args.streams, args.scans, 600)
    try:
        with load:
            time.sleep(3)  # the load is running
            probes = {
                port: subprocess.Popen(
                    [sys.executable, "-c", PROBE, target, str(args.seconds)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ},
                )
                for port, target in [("main port", address), ("health port", health)]
            }
            results = {port: json.loads(probe.communicate()[0]) for port, probe in probes.items()}
            done = dict(load.served)
    finally:
        process.terminate()
        process.wait(30)
    print(
        f"health Check under {args.streams} top-k streams + {args.scans} scans, one probe "
        f"process per port at once, {args.seconds:g} s (load done meanwhile: {done}):"
    )
    for port, result in results.items():
        print(f"  {port}: {_summary(result['latencies'], result['failures'])}")


def _summary(latencies: list[float], failures: int) -> str:
    """Probes, p50/p95/p99/max in ms, failures."""
    ordered = sorted(latencies)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return (
        f"{len(ordered)} probes, p50 {p(0.5):.1f} ms, p95 {p(0.95):.1f} ms, "
        f"p99 {p(0.99):.1f} ms, max {ordered[-1] * 1000:.1f} ms, failures {failures}"
    )


if __name__ == "__main__":
    main()
