"""The HTTP face against the gRPC face for the same question, in one run: GET
/api/v1/scans/{id}/neurons (k = 9, its document with a patch_url per result, the patches
rendered) and the nine patch images it links, against gRPC GetNeuron with its patches.

A synthetic CNN (onnx.helper: 3 conv layers, 32 channels) is scanned once over random 96x96
photos; then each query asks for another channel, HTTP and gRPC alternating so both see the
same caches. Latency at the client, over loopback.

Usage: python bench/http_bench.py [--images N] [--queries N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client import Client
from maxact.server.app import start_server

SIZE = 96
CHANNELS = 32
LAYER = "relu3"


def model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, previous, width = [], [], "image", 3
    for i in (1, 2, 3):
        w = rng.normal(0, 0.2, (CHANNELS, width, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w{i}"], [f"conv{i}"], kernel_shape=[3, 3], strides=[2, 2]
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        previous, width = f"relu{i}", CHANNELS
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    made.ir_version = 8
    return made


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(share * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maxact-http-bench-"))
    (work / "models").mkdir()
    onnx.save(model(), work / "models" / "net.onnx")
    photos = work / "data" / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(args.images):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"img_{i:05d}.png")
    with (
        start_server(work / "models", work / "data", device="cpu", store=work / "s.sqlite") as srv,
        Client(srv.address, timeout=600) as client,
        httpx.Client(base_url=srv.http_url, timeout=120) as api,
    ):
        scan = client.scans.create("net", [LAYER], "photos", k=9)
        start = time.perf_counter()
        final = list(client.scans.watch(scan.id))[-1]
        assert final.state == "succeeded", final
        scan_seconds = time.perf_counter() - start
        client.scans.neuron(scan.id, LAYER, 0, k=9)  # warm: model view, store connection
        http_ms, page_ms, grpc_ms = [], [], []
        for query in range(args.queries):
            channel = 1 + query % (CHANNELS - 1)
            began = time.perf_counter()
            answer = api.get(
                f"/api/v1/scans/{scan.id}/neurons", params={"layer": LAYER, "channel": channel}
            )
            http_ms.append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 200 and len(answer.json()["results"]) == 9
            for result in answer.json()["results"]:
                assert api.get(result["patch_url"]).status_code == 200
            page_ms.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            _, patches, _ = client.scans.neuron(scan.id, LAYER, channel, k=9)
            grpc_ms.append((time.perf_counter() - began) * 1000)
            assert len(patches) == 9 and all(p.png for p in patches)
    print(
        f"scan of {final.images_done} images, {LAYER} ({CHANNELS} channels): {scan_seconds:.1f} s"
    )
    for name, values in (
        ("HTTP GET .../neurons (k=9, patches rendered)", http_ms),
        ("HTTP document + its 9 patch images", page_ms),
        ("gRPC GetNeuron (k=9 with patches)", grpc_ms),
    ):
        print(
            f"{name}: p50 {statistics.median(values):.1f} ms, "
            f"p95 {percentile(values, 0.95):.1f} ms ({len(values)} queries)"
        )
    ratio = statistics.median(http_ms) / statistics.median(grpc_ms)
    print(f"HTTP / gRPC median ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
