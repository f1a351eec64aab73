"""Scans of token tensors against plain onnxruntime, measured in ONE run on the same batches.

Models: a tiny ViT built with onnx.helper (224 x 224, 16 x 16 patches, CLS token, width 192,
3 heads, 4 blocks; random weights) and PP-OCRv4's text recogniser (real weights, 48 x 320
text-line crops). For each, every channel of two token layers:
(1) plain onnxruntime on the graph pruned to the layers, pre-decoded tensors (the baseline);
(2) the scan engine on the same tensors: inference + top-9, bottom-9 and statistics with 10
    classes for every channel over the grid tokens (prefix excluded);
(3) the scan engine end to end from the image files (decode, resize, inference, reductions).
Rounds are interleaved; the table gives the median of each, and the ratio to (1).

Usage: python bench/vit_bench.py [--images 256] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from PIL import Image
from scan_bench import _batches, _engine, _labels, _plain  # bench/ is on sys.path

from maxact.client.demo.fetch import (
    RECOGNISER,
    default_cache_dir,
    fetch_recogniser,
    write_demo_photos,
)
from maxact.client.demo.text_crops import write_text_crops
from maxact.server.data.preprocess import Preprocessing, resolve
from maxact.server.data.reader import file_source
from maxact.server.graph.surgery import prune_to_outputs
from maxact.server.models.registry import LoadedModel, ModelRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' model builders
from tests.vit_models import tiny_vit


def bench(
    title: str,
    model: LoadedModel,
    layers: list[str],
    prep: object,
    files: list[Path],
    images: int,
    batch: int,
    repeats: int,
) -> None:
    rng = np.random.default_rng(0)
    arrays = np.stack(
        [prep.to_array(Image.open(files[i % len(files)])) for i in range(images)]  # type: ignore[attr-defined]
    )
    arrays += rng.normal(0, 0.01, arrays.shape).astype(np.float32)  # distinct images
    batches = _batches(arrays, batch)
    sources = [file_source(i, p.name, p) for i, p in enumerate(files[:images])]
    pruned = prune_to_outputs(model.proto, layers)
    labels, file_labels = _labels(images, 10), _labels(len(sources), 10)
    _engine(model, layers, prep, 10).run_batches(batches[:1], batch, labels)  # warm-up
    runs: dict[str, list[float]] = {"1": [], "2": [], "3": []}
    for _ in range(repeats):
        runs["1"].append(images / _plain(pruned, layers, batches, model.input.name))
        outcome = _engine(model, layers, prep, 10).run_batches(batches, images, labels)
        runs["2"].append(images / outcome.seconds)
        outcome = _engine(model, layers, prep, 10).run(sources, file_labels)
        runs["3"].append(len(sources) / outcome.seconds)
    rates = {key: statistics.median(values) for key, values in runs.items()}
    size = prep.input_size  # type: ignore[attr-defined]
    channels = sum(model.layer(size, name).shape[0] for name in layers)
    print(
        f"\n## {title}: layers {layers} ({channels} channels), batch {batch}, "
        f"{os.cpu_count()} cores, medians of {repeats} rounds"
    )
    print(f"tensors: {images} images; files: {len(sources)}")
    print("| what | images/s | ratio to (1) |\n|---|---:|---:|")
    labels_of = {
        "1": "(1) plain onnxruntime, pruned graph, pre-decoded",
        "2": "(2) scan engine, same tensors, all reductions",
        "3": "(3) scan engine from the image files",
    }
    for key, label in labels_of.items():
        print(f"| {label} | {rates[key]:.1f} | {rates[key] / rates['1']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cache = default_cache_dir()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vit = tiny_vit(size=(224, 224), patch=16, dim=192, heads=3, blocks=4, prefix=1)
        onnx.save(vit, str(root / "vit.onnx"))
        photos = write_demo_photos(root / "photos")
        files = [photos[i % len(photos)] for i in range(args.images)]
        registry = ModelRegistry(root, "cpu")
        model = registry.get("vit")
        prep = resolve(
            model.default_preprocessing,
            Preprocessing(size=(224, 224)),
            model.input.fixed_size,
            model.input.layout,
        )
        bench(
            "tiny ViT (onnx.helper, random weights), 224x224, grid 14x14 + CLS",
            model,
            ["block1.mlp", "final_ln"],
            prep,
            files,
            args.images,
            args.batch,
            args.repeats,
        )

        recogniser = fetch_recogniser(cache)
        crops = write_text_crops(root / "lines")
        ocr = ModelRegistry(recogniser.parent, "cpu").get(RECOGNISER.name)
        ocr_prep = resolve(
            ocr.default_preprocessing, Preprocessing(), ocr.input.fixed_size, ocr.input.layout
        )
        lines = [crops[i % len(crops)] for i in range(args.images)]
        bench(
            "PP-OCRv4 recogniser (real weights), 48x320, grid 1x40",
            ocr,
            ["swish_13.tmp_0", "softmax_11.tmp_0"],
            ocr_prep,
            lines,
            args.images,
            args.batch,
            args.repeats,
        )


if __name__ == "__main__":
    main()
