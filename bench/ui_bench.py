"""The web UI's pages against a finished scan, through the real server and a real browser.

One scan of a 512-channel layer over N images (default 20000, k = 9) is run once; then:
- the layer page (50 rows x 9 thumbnails): time to first byte and to the whole HTML (httpx,
  median of repeats), and in headless Chromium the time from navigation to every thumbnail
  loaded (scrolled into view, as they load lazily), with the server's patch cache cold (first
  visit) and warm (a second browser, same page);
- the neuron page (top-9 and bottom-9 patches): HTML p50/p95 over many channels; its responses
  sections (the fragment the page loads after its patches) at the first visit of each channel
  and again (kept in memory); in the browser the time to all patches loaded, cold, p50/p95.

Usage: python bench/ui_bench.py [--images N] [--neurons N]
Needs chromium and chromedriver (`make sysdeps`).
"""

from __future__ import annotations

import argparse
import html as html_module
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maxact.client import Client
from maxact.server.app import start_server
from tests.browser import LOAD_EVERY_IMAGE, Browser
from tests.onnx_models import finish, save

CHANNELS = 512
LAYER = "wide"
SIZE = 64
K = 9
SSE_IMAGES = 1500  # a second scan whose page is watched while it runs


def wide_model() -> object:
    """Conv 3->64 (3x3 s2) -> Relu -> Conv 64->512 (3x3 s2) -> Relu `wide` [512, 16, 16]."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (64, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.08, (CHANNELS, 64, 3, 3)).astype(np.float32)
    b2 = rng.normal(-0.1, 0.2, (CHANNELS,)).astype(np.float32)
    conv = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w1"], ["c1"], **conv),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **conv),
            helper.make_node("Relu", ["c2"], [LAYER]),
        ],
        "wide",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(LAYER, TensorProto.FLOAT, ["N", CHANNELS, 16, 16])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    return finish(graph)


def write_dataset(folder: Path, count: int) -> None:
    """`count` 96x96 JPEGs in 10 class folders: noise with a bright square somewhere."""
    rng = np.random.default_rng(1)
    for i in range(count):
        pixels = rng.integers(0, 120, (96, 96, 3), dtype=np.uint8)
        y, x = rng.integers(0, 80, 2)
        pixels[y : y + 16, x : x + 16, i % 3] = 255
        path = folder / f"class{i % 10}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)


def ttfb(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> tuple[float, float]:
    """(seconds to the first byte of the body, seconds to the whole body)."""
    start = time.perf_counter()
    with client.stream("GET", url, headers=headers) as answer:
        chunks = answer.iter_bytes()
        next(chunks)
        first = time.perf_counter() - start
        for _ in chunks:
            pass
    assert answer.status_code == 200, answer.status_code
    return first, time.perf_counter() - start


def browser_load(profile: Path, url: str) -> tuple[float, int]:
    """(seconds from navigation to every image loaded, images) in a fresh headless Chromium."""
    with Browser(profile) as browser:
        browser.open("about:blank")
        start = time.perf_counter()
        browser.open(url)
        images = browser.run_async(LOAD_EVERY_IMAGE, 300000)
        seconds = time.perf_counter() - start
    broken = [i for i in images if not i["complete"] or i["width"] <= 0]
    assert not broken, broken[:3]
    return seconds, len(images)


WATCH_JS = """
window.__seen = [];
var box = document.querySelector('.progress .count');
new MutationObserver(function () {
  window.__seen.push([Date.now(), box.textContent]);
}).observe(box, {childList: true, characterData: true, subtree: true});
"""


def sse_delay(work: Path, base: str, client: Client) -> list[float]:
    """Seconds from the server answering a progress step (GetScan polled every 10 ms over
    gRPC, the step's first sighting) to the scan page in Chromium showing that step (a
    MutationObserver's Date.now(); the same machine's clock)."""
    stored: dict[int, float] = {}
    with Browser(work / "sse") as browser:
        scan = client.scans.create("wide", [LAYER], "few", k=K)
        browser.open(f"{base}/scans/{scan.id}")
        browser.run(WATCH_JS)
        while True:
            info = client.scans.get(scan.id)
            stored.setdefault(info.images_done, time.time())
            if info.state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.01)
        time.sleep(1.0)
        seen = browser.run("return window.__seen;")
    shown: dict[int, float] = {}
    for millis, text in seen:
        shown.setdefault(int(text.split(" / ")[0]), millis / 1000)
    return [shown[n] - t for n, t in stored.items() if n in shown and n > 0]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--neurons", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maxact-ui-bench-"))
    path = save(wide_model(), work / "models", "wide")  # type: ignore[arg-type]
    path.with_name("wide.preprocess.json").write_text(json.dumps({"size": [SIZE, SIZE]}))
    start = time.perf_counter()
    write_dataset(work / "data" / "shapes", args.images)
    write_dataset(work / "data" / "few", SSE_IMAGES)
    print(f"dataset: {args.images} images in {time.perf_counter() - start:.1f} s", flush=True)
    with (
        start_server(work / "models", work / "data", device="cpu", store=work / "s.sqlite") as srv,
        Client(srv.address, timeout=3600) as client,
        httpx.Client(base_url=srv.http_url, timeout=300) as web,
    ):
        start = time.perf_counter()
        scan = client.scans.create("wide", [LAYER], "shapes", k=K)
        assert [s.state for s in client.scans.watch(scan.id)][-1] == "succeeded"
        print(f"scan: {time.perf_counter() - start:.1f} s", flush=True)
        layer_url = f"/scans/{scan.id}/layers?layer={LAYER}"
        html = [ttfb(web, layer_url) for _ in range(args.repeats)]
        print(
            f"layer page HTML ({CHANNELS} channels, 50 rows x {K} thumbnails): "
            f"TTFB median {statistics.median(h[0] for h in html) * 1000:.1f} ms, "
            f"whole HTML median {statistics.median(h[1] for h in html) * 1000:.1f} ms",
            flush=True,
        )
        cold, count = browser_load(work / "b1", srv.http_url + layer_url)
        for label, page in (("cold", 2), ("warm", 2)):  # page 2: its patches not rendered yet
            srcs = re.findall(
                r'src="(/ui/patches/[^"]+)"', web.get(f"{layer_url}&page={page}").text
            )
            start = time.perf_counter()
            for src in srcs:
                assert web.get(html_module.unescape(src)).status_code == 200
            seconds = time.perf_counter() - start
            print(
                f"layer page 2's {len(srcs)} thumbnails one by one over one connection, {label}: "
                f"{seconds:.2f} s ({seconds / len(srcs) * 1000:.1f} ms each)",
                flush=True,
            )
        warm, _ = browser_load(work / "b2", srv.http_url + layer_url)
        print(
            f"layer page in Chromium, navigation to all {count} thumbnails loaded: "
            f"cold (server patch cache empty) {cold:.2f} s, warm {warm:.2f} s",
            flush=True,
        )
        channels = list(range(100, 100 + args.neurons))
        pages = [
            ttfb(web, f"/scans/{scan.id}/neurons?layer={LAYER}&channel={c}")[1] for c in channels
        ]
        print(
            f"neuron page HTML over {len(pages)} channels: p50 {pct(pages, 50):.1f} ms, "
            f"p95 {pct(pages, 95):.1f} ms",
            flush=True,
        )
        htmx = {"HX-Request": "true"}  # as the page's hx-get asks for its responses sections
        for label in ("first visit", "again (kept)"):
            parts = [
                ttfb(web, f"/scans/{scan.id}/neurons/responses?layer={LAYER}&channel={c}", htmx)[1]
                for c in channels
            ]
            print(
                f"neuron page's responses fragment, {label}, over {len(parts)} channels: "
                f"p50 {pct(parts, 50):.1f} ms, p95 {pct(parts, 95):.1f} ms",
                flush=True,
            )
        delays = sse_delay(work, srv.http_url, client)
        print(
            "SSE: the server answering a progress step -> scan page in Chromium: "
            f"p50 {pct(delays, 50):.0f} ms, p95 {pct(delays, 95):.0f} ms "
            f"over {len(delays)} progress steps",
            flush=True,
        )
        loads = [
            browser_load(work / f"n{c}", f"{srv.http_url}/scans/{scan.id}/neurons?layer={LAYER}"
                         f"&channel={c + args.neurons}")[0]
            for c in channels[: max(5, args.neurons // 4)]
        ]  # fmt: skip
        print(
            f"neuron page in Chromium, navigation to all {2 * K} patches loaded (cold, new "
            f"browser each): p50 {pct(loads, 50):.0f} ms, p95 {pct(loads, 95):.0f} ms "
            f"over {len(loads)} channels",
            flush=True,
        )


if __name__ == "__main__":
    main()
