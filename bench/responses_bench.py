"""Per-image responses: what keeping them costs a scan, how fast the questions are answered
from a large matrix, and the disk they take.

(1) One run, interleaved: the same persisted scan through a real in-process server (the
    one-worker executor, checkpoints every 32 images) of the last stage (`layer4`, 2048
    channels) of a ResNet-50-shaped graph (bench/scan_bench.resnet: the ResNet-50 topology,
    random He weights: the compute of the real network, not its answers) over the same photos,
    with --responses off and on, alternately; the ratio of the best times.
(2) `labels` (10 classes) and `similar` on a synthetic 50 000 x 2048 matrix written with the
    server's own files code, read through its memory map (the core functions, no gRPC).
(3) Disk: bytes of the matrix per 1000 images per 1000 channels, measured on (1)'s files.

Usage: python bench/responses_bench.py [--images 96] [--repeats 2] [--rows 50000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from PIL import Image
from scan_bench import resnet  # bench/ is on sys.path when this script runs

from maxact.client import Client
from maxact.server.analysis.responses import channel_labels, similar_channels
from maxact.server.app import start_server
from maxact.server.jobs.responses_files import ResponsesFiles

LAYER = "layer4"


def _scan_seconds(client: Client, responses: str, images: int) -> float:
    started = time.perf_counter()
    scan = client.scans.create("resnet50", [LAYER], "photos", k=9, responses=responses)
    final = [info for info in client.scans.watch(scan.id)][-1]
    seconds = time.perf_counter() - started
    assert final.state == "succeeded" and final.images_done == images, final
    return seconds


def bench_scan_cost(root: Path, images: int, repeats: int) -> None:
    models, data = root / "models", root / "data"
    models.mkdir(parents=True)
    onnx.save(resnet("resnet50", 224, 0, (3, 4, 6, 3), bottleneck=True), models / "resnet50.onnx")
    rng = np.random.default_rng(0)
    (data / "photos").mkdir(parents=True)
    for i in range(images):
        pixels = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / "photos" / f"{i:05d}.png")
    store = root / "state" / "store.sqlite"
    times: dict[str, list[float]] = {"off": [], "on": []}
    with (
        start_server(models, data, device="cpu", store=store, checkpoint_images=32) as server,
        Client(server.address, timeout=3600) as client,
    ):
        _scan_seconds(client, "off", images)  # warm-up: session built, files cached
        for _ in range(repeats):
            for mode in ("off", "on"):
                times[mode].append(_scan_seconds(client, mode, images))
    off, on = min(times["off"]), min(times["on"])
    print(f"scan {images} images, ResNet-50-shaped {LAYER} (2048 channels), best of {repeats}:")
    print(f"  responses off {off:.2f} s, on {on:.2f} s: on/off = {on / off:.3f}")
    print(f"  per image: off {off / images * 1e3:.1f} ms, on {on / images * 1e3:.1f} ms")
    print(
        f"  all runs: off {[round(t, 2) for t in times['off']]}, on "
        f"{[round(t, 2) for t in times['on']]}"
    )
    files = list((root / "state" / "responses").rglob("*.npy"))
    size = files[0].stat().st_size
    per = size / images / 2048 * 1000 * 1000
    print(
        f"disk: {size} bytes for {images} x 2048: {per / 2**20:.2f} MiB per 1k images per 1k"
        " channels"
    )


def bench_added_work(root: Path, channels: int = 2048, part: int = 32, rounds: int = 20) -> None:
    """What keeping responses adds per image, alone (process CPU time, and wall time for the
    write): the copy of each batch's [16, C] responses, the block taken
    from the reducer at a checkpoint, and its write to the column-major file."""
    from maxact.server.scan.layer import LayerReducer, ReduceOptions

    reducer = LayerReducer("x", None, (channels,), ReduceOptions(k=9, keep_responses=True))
    files = ResponsesFiles(root / "responses")
    files.create("w", part * rounds, {"x": channels})
    layout = files.layout("w")
    assert layout is not None
    files.allocate("w", layout)
    rng = np.random.default_rng(2)
    batch = rng.normal(0, 1, (16, channels)).astype(np.float32)
    copy_cpu = write_cpu = write_wall = 0.0
    for r in range(rounds):
        first = r * part
        start = time.process_time()
        for b in range(part // 16):
            images = np.arange(first + 16 * b, first + 16 * (b + 1))
            reducer._kept.append((images, np.array(batch, dtype=np.float32)))
        block = reducer.take_responses(first, first + part)
        copy_cpu += time.process_time() - start
        start, wall = time.process_time(), time.perf_counter()
        files.write("w", layout, first, {"x": block})
        write_cpu += time.process_time() - start
        write_wall += time.perf_counter() - wall
    images = part * rounds
    print(
        f"added per image at {channels} channels, blocks of {part} images: copy + block "
        f"{copy_cpu / images * 1e3:.3f} ms CPU, write {write_cpu / images * 1e3:.3f} ms CPU "
        f"({write_wall / images * 1e3:.3f} ms wall)"
    )


def bench_questions(root: Path, rows: int, channels: int = 2048, classes: int = 10) -> None:
    files = ResponsesFiles(root / "responses")
    files.create("synthetic", rows, {"layer": channels})
    layout = files.layout("synthetic")
    assert layout is not None
    files.allocate("synthetic", layout)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, classes, rows)
    step = 4096
    started = time.perf_counter()
    for first in range(0, rows, step):
        n = min(step, rows - first)
        block = np.maximum(rng.normal(0, 1, (n, channels)), 0).astype(np.float32)
        block[:, 0] += labels[first : first + n] == 3  # a planted class-3 detector
        files.write("synthetic", layout, first, {"layer": block})
    print(f"wrote a {rows} x {channels} matrix in {time.perf_counter() - started:.1f} s")
    matrix = files.matrix("synthetic", layout, "layer")
    names = tuple(f"class{j}" for j in range(classes))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    found = channel_labels(matrix, labels, names, 9, range(channels))
    labels_s = time.perf_counter() - started
    started = time.perf_counter()
    similar = similar_channels(matrix, 0, 10)
    similar_s = time.perf_counter() - started
    started = time.perf_counter()
    channel_labels(matrix, labels, names, 9, [0])
    one_s = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"labels, all {channels} channels, {rows} images, {classes} classes: {labels_s:.1f} s"
        f" (channel 0: {found[0].label}, AUC {found[0].auc:.3f}); one channel: {one_s:.3f} s"
    )
    print(f"similar of one channel against {channels}: {similar_s:.2f} s ({len(similar)} found)")
    print(
        f"peak RSS {peak / 1024:.0f} MiB (before the questions {before / 1024:.0f} MiB; the"
        f" matrix is {rows * channels * 4 / 2**20:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--skip-scan", action="store_true")
    parser.add_argument("--skip-questions", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maxact-responses-bench-") as folder:
        root = Path(folder)
        for part in (32, 256):  # the bench scan's checkpoints; the default --checkpoint-images
            bench_added_work(root / f"added{part}", part=part)
        if not args.skip_questions:
            bench_questions(root / "questions", args.rows)
        if not args.skip_scan:
            bench_scan_cost(root / "scan", args.images, args.repeats)


if __name__ == "__main__":
    main()
