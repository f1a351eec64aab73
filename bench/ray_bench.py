"""Persisted scans on Ray against the local engine, on the same data on this machine.

One dataset (N noise PNGs), one model (the ResNet-18-shaped CNN of scan_bench, layer3 +
layer4, all channels, top-k + bottom-k + statistics), one persisted scan each way, timed from
CreateScan to `succeeded` through the real gRPC server:
(1) local: `maxact serve` without --ray-address (the scan engine in the server process);
(2) Ray, 1 worker with every core of a one-node loopback cluster (the overhead ratio);
(3) Ray, 2 workers with half the cores each (scaling, as far as this machine allows).
Each Ray row is measured twice: "cold" (the first scan starts the workers: process start,
imports, model load) and "warm" (the next scan reuses the idle workers).

Usage: python bench/ray_bench.py [--images 512] [--size 112] [--shard-images 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scan_bench import resnet18  # bench/ is on sys.path when this script runs

from maxact.client import Client
from maxact.server.app import start_server

LAYERS = ["layer3", "layer4"]
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray then binds and advertises 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
}


def write_dataset(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:05d}.png")


def timed_scan(address: str, images: int) -> float:
    """Images per second of one persisted scan, CreateScan to succeeded."""
    with Client(address, timeout=3600) as client:
        start = time.perf_counter()
        scan = client.scans.create("resnet18", LAYERS, "bench", k=9)
        states = [info.state for info in client.scans.watch(scan.id)]
        seconds = time.perf_counter() - start
    assert states[-1] == "succeeded", states
    return images / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--shard-images", type=int, default=64)
    args = parser.parse_args()
    os.environ.update(LOOPBACK_ENV)
    from ray.cluster_utils import Cluster

    cores = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="maxact-ray-bench-"))
    models, data = root / "models", root / "data"
    models.mkdir()
    (models / "resnet18.onnx").write_bytes(resnet18(args.size).SerializeToString())
    write_dataset(data / "bench", args.images, args.size)
    print(f"{args.images} images {args.size}x{args.size}, layers {LAYERS}, {cores} cores")

    with start_server(models, data, device="cpu") as server:
        timed_scan(server.address, args.images)  # warm the page cache and the session
        local = timed_scan(server.address, args.images)
    print(f"local engine              {local:8.1f} images/s")

    cluster = Cluster(
        initialize_head=True,
        # a small object store: results are KBs, and a default-sized one may not fit /dev/shm
        head_node_args={
            "num_cpus": cores,
            "include_dashboard": False,
            "object_store_memory": 200 * 1024**2,
        },
    )
    try:
        for workers in (1, 2):
            with start_server(
                models,
                data,
                device="cpu",
                ray_address=cluster.address,
                ray_workers=workers,
                ray_worker_cpus=max(1, cores // workers),
                shard_images=args.shard_images,
            ) as server:
                cold = timed_scan(server.address, args.images)
                warm = timed_scan(server.address, args.images)
            print(
                f"Ray, {workers} worker(s) x {max(1, cores // workers)} cores:"
                f" cold {cold:8.1f} images/s ({cold / local:.2f}x local),"
                f" warm {warm:8.1f} images/s ({warm / local:.2f}x local)"
            )
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
