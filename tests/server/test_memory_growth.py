"""The server's memory stays bounded under the loads that used to grow it until the kernel's
OOM killer ended it: top-k over many distinct channels (a session per channel subset) and
images each at their own size (a session and arena buffers per size). Through the real server
and onnxruntime, in this process, so the process's RSS is the server's."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client import Client, Preprocessing
from maxact.server.app import start_server
from tests.onnx_models import finish, save

CHANNEL_CALLS = 24
SIZE_CALLS = 14
LAYER = "relu3"
# resize_shorter + size_multiple: every image gets its own model-input size, like a text
# detector (PP-OCR: --resize-shorter 736 --size-multiple 32)
PER_IMAGE_SIZE = Preprocessing(resize_shorter=224, size_multiple=32)
# Growth allowed outside the bounded caches over the 38 measured calls after the warm-up ones:
# measured 57-67 MB here (~1.6 MB per call, allocator and arena noise), while a session per
# channel or an arena per size grew this server by 1,100 MB over the same calls (29 MB a call).
MAX_GROWTH_MB = 120.0


def detector_like_model(width: int = 48) -> onnx.ModelProto:
    """Dynamic [N, 3, H, W] input, four 3x3 convs (strides 2, 1, 2, 1) with ReLUs and a
    large-ish weight tensor per conv, so each onnxruntime session and each input size's
    buffers cost measurable memory."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    previous, channels = "image", 3
    for i, stride in enumerate((2, 1, 2, 1)):
        w = rng.normal(0, 0.1, (width, channels, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(
            helper.make_node(
                "Conv",
                [previous, f"w{i}"],
                [f"conv{i}"],
                kernel_shape=[3, 3],
                strides=[stride, stride],
                pads=[1, 1, 1, 1],
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        previous, channels = f"relu{i}", width
    graph = helper.make_graph(
        nodes,
        "detector_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", width, "H4", "W4"])],
        initializer=inits,
    )
    return finish(graph)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def metrics(port: int) -> dict[str, float]:
    """The server's /metrics samples by name (with labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for name, value in (
            line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#"
        )
    }


def _photo(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _sizes() -> list[tuple[int, int]]:
    """Original sizes whose model-input sizes all differ (224 x 224..800 in steps of 32)."""
    return [(224, 224 + 40 * i) for i in range(SIZE_CALLS + 2)]


@pytest.mark.slow  # 30-75 s on 2 shared cores
def test_memory_stays_bounded_over_distinct_channels_and_image_sizes(tmp_path: Path) -> None:
    models, data = tmp_path / "models", tmp_path / "data"
    save(detector_like_model(), models, "det")
    photos = data / "photos"
    photos.mkdir(parents=True)
    for i, (height, width) in enumerate(_sizes()[:6]):
        _photo(height, width, i).save(photos / f"p{i}.png")
    singles = tmp_path / "singles"
    singles.mkdir()
    single_paths = []
    for i, (height, width) in enumerate(_sizes()):
        path = singles / f"s{i}.png"
        _photo(height, width, 100 + i).save(path)
        single_paths.append(path)

    with (
        start_server(
            models, data, device="cpu", metrics_port=0, store=tmp_path / "s.sqlite"
        ) as server,
        Client(server.address, timeout=300) as client,
    ):

        def channel_call(channel: int) -> None:
            client.topk(
                "det", LAYER, channel, dataset="photos", k=3, preprocessing=PER_IMAGE_SIZE
            ).result()

        def size_call(path: Path) -> None:
            client.topk_images("det", LAYER, 0, [path], k=1, preprocessing=PER_IMAGE_SIZE).result()

        # warm-up: the first session, the first sizes' buffers, imports and thread pools
        channel_call(0)
        channel_call(1)
        size_call(single_paths[0])
        size_call(single_paths[1])
        assert server.metrics_port is not None
        cached_start = _cache_mb(metrics(server.metrics_port))
        start = _rss_mb()
        peak = start
        for channel in range(2, 2 + CHANNEL_CALLS):
            channel_call(channel)
            peak = max(peak, _rss_mb())
        after_channels = _rss_mb()
        for path in single_paths[2 : 2 + SIZE_CALLS]:
            size_call(path)
            peak = max(peak, _rss_mb())
        end = _rss_mb()
        assert server.metrics_port is not None
        values = metrics(server.metrics_port)
        sessions = len(server._built.jobs.models.sessions)  # this server's own cache

    calls = CHANNEL_CALLS + SIZE_CALLS
    # what the bounded caches took on is theirs to keep (within their caps and the budget's
    # share, asserted below); the rest of the growth is what no bound would catch
    cached = _cache_mb(values) - cached_start
    growth = end - start - cached
    print(
        f"\nmemory: start {start:.0f} MB, after {CHANNEL_CALLS} channels {after_channels:.0f} "
        f"MB, after {SIZE_CALLS} sizes {end:.0f} MB, peak {peak:.0f} MB; growth "
        f"{growth / calls:.2f} MB per call outside the caches (which took {cached:.0f} MB)"
    )
    # one session for the layer set, whatever the channel and the image size
    assert sessions == 1
    # /metrics adds up the caches of every server alive in this process (other tests' too)
    assert values['maxact_cache_entries{cache="sessions"}'] >= 1
    assert values['maxact_cache_bytes{cache="sessions"}'] > 0
    assert values["maxact_memory_budget_bytes"] > 0
    assert _cache_mb(values) * 2**20 <= values["maxact_memory_cache_budget_bytes"]
    assert growth < MAX_GROWTH_MB, f"RSS grew {growth:.0f} MB over {calls} calls"


def _cache_mb(values: dict[str, float]) -> float:
    """What the caches of this process are charged, in MB (every `maxact_cache_bytes`)."""
    return sum(v for k, v in values.items() if k.startswith("maxact_cache_bytes{")) / 2**20


def test_a_size_views_charge_covers_what_it_holds_within_four_times(tmp_path: Path) -> None:
    """The catalogue of one input size (shapes, receptive fields, rows) is charged an estimate
    (`view_cost`); tracemalloc measures what building it kept."""
    import tracemalloc

    from maxact.server.models.registry import ModelRegistry, view_cost

    save(detector_like_model(), tmp_path, "det")
    model = ModelRegistry(tmp_path, "cpu").get("det")
    model.view((256, 256))  # imports, onnxruntime's first session, caches of the rf engine
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        view = model.view((224, 320))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= view_cost(view) <= 4 * held
