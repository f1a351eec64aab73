"""Health latency under load: grpc.health.v1 Check round trips while the server streams 64
top-k requests and runs 2 scans (the container HEALTHCHECK gives up after 3 s).

The server is a `maxact serve` child process on 127.0.0.1 (its own GIL); the load comes from
threads of this process; the probe is a third process (one channel, a Check every 50 ms), so
neither the load nor the probe shares an interpreter with what it measures.

Usage: python bench/health_bench.py [--seconds 30] [--streams 64] [--scans 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client import Client, MaxactError, Preprocessing

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


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    nodes, inits, previous, channels = [], [], "input", 3
    for i in range(4):
        w = rng.normal(0, 0.1, (32, channels, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w{i}"], [f"conv{i}"], kernel_shape=[3, 3], pads=[1] * 4
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        previous, channels = f"relu{i}", 32
    graph = helper.make_graph(
        nodes,
        "load",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", 32, SIZE, SIZE])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _serve(work: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "maxact.server", "--port", "0", "--device", "cpu"]
    command += ["--model-root", str(work / "models"), "--data-root", str(work / "data")]
    command += ["--store", str(work / "store.sqlite"), "--max-running-scans", "2"]
    command += ["--max-concurrent-rpcs", "256"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"serving on (\S+:\d+)", line)
        if found:
            return process, found.group(1)
    raise RuntimeError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--scans", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maxact-health-bench-"))
    (work / "models").mkdir()
    onnx.save(_model(), work / "models" / "load.onnx")
    rng = np.random.default_rng(0)
    (work / "data" / "photos").mkdir(parents=True)
    for i in range(96):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(work / "data" / "photos" / f"{i:03d}.png")
    process, address = _serve(work)
    stop = threading.Event()
    prep = Preprocessing(size=(SIZE, SIZE))
    done = {"streams": 0, "scans": 0}

    def stream(channel: int) -> None:
        with Client(address, timeout=600) as client, contextlib.suppress(MaxactError):
            while not stop.is_set():
                client.topk(
                    "load", "relu3", channel % 32, dataset="photos", k=4, preprocessing=prep
                ).result()
                done["streams"] += 1

    def scan() -> None:
        with Client(address, timeout=600) as client, contextlib.suppress(MaxactError):
            while not stop.is_set():
                info = client.scans.create(
                    "load", ["relu1", "relu3"], "photos", k=4, preprocessing=prep
                )
                list(client.scans.watch(info.id))
                done["scans"] += 1

    try:
        workers = [
            threading.Thread(target=stream, args=(i,), daemon=True) for i in range(args.streams)
        ]
        workers += [threading.Thread(target=scan, daemon=True) for _ in range(args.scans)]
        for worker in workers:
            worker.start()
        time.sleep(3)  # the load is running
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, address, str(args.seconds)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
        )
        stop.set()
    finally:
        process.terminate()
        process.wait(30)
    result = json.loads(probe.stdout)
    latencies = sorted(result["latencies"])
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    print(
        f"health Check under {args.streams} top-k streams + {args.scans} scans, "
        f"{len(latencies)} probes over {args.seconds:g} s: p50 {p(0.5):.0f} ms, "
        f"p99 {p(0.99):.0f} ms, max {latencies[-1] * 1000:.0f} ms, "
        f"failures {result['failures']} (load done meanwhile: {done})"
    )


if __name__ == "__main__":
    main()
