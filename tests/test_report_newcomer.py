"""What a newcomer's first `maxact report` needs: a size and time budget for a wide layer,
compact files, each source image decoded once, a deep-layer render that shows the photo, a
dynamic-size scan described at the size it ran at, and no silent writes into a full folder."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client import Client
from maxact.client.cli.main import main
from maxact.client.progress import ProgressBar
from maxact.client.report.writer import OutputNotEmptyError, write_report
from maxact.server.patches.cache import ACTIVATIONS, ORIGINALS, RENDERED
from tests.onnx_models import finish, save

WIDE = 512  # channels of the deep layer
NARROW = 16  # the same layer, narrow: tests of what a report holds, not of its speed
IMAGES = 40
K = 8
SIZE = 64
# the budget of the issue is 1280 channels x 8 patches over 100 images in well under a
# minute and ~100 MB; this layer is 40% of that
TIME_BUDGET_S = 45.0  # measured ~15 s alone, ~29 s on 2 cores shared with 7 others
BYTES_BUDGET = 40 * 1024 * 1024


def wide_cnn(size: int | None = SIZE, width: int = WIDE) -> object:
    """conv1 (7x7 stride 4, 16 ch) -> relu -> conv2 (9x9 stride 2, WIDE ch) -> relu: `deep`
    sees 39x39 input pixels, more than half of a 64 px input (so the report picks `mask`)."""
    rng = np.random.default_rng(5)
    w1 = rng.normal(0, 0.3, (16, 3, 7, 7)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (width, 16, 9, 9)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], kernel_shape=[7, 7], strides=[4, 4]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node(
            "Conv", ["r1", "w2"], ["c2"], kernel_shape=[9, 9], strides=[2, 2], pads=[4, 4, 4, 4]
        ),
        helper.make_node("Relu", ["c2"], ["deep"]),
    ]
    side: int | str = size if size is not None else "H"
    graph = helper.make_graph(
        nodes,
        "wide_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("deep", TensorProto.FLOAT, ["N", width, "h", "w"])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return finish(graph)


def photos(root: Path, count: int) -> None:
    """Smooth random colour fields with a few shapes: photo-like, not noise (JPEG-friendly)."""
    rng = np.random.default_rng(9)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = rng.integers(0, 255, size=(6, 8, 3)).astype(np.uint8)
        image = Image.fromarray(small).resize((240, 180), Image.Resampling.BICUBIC)
        image.save(root / f"photo_{i:03d}.jpg", quality=90)


@pytest.fixture(scope="module")
def wide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wide")


@pytest.fixture(scope="module")
def wide_scan(wide_root: Path) -> Iterator[tuple[Client, str]]:
    from maxact.server.app import start_server

    root = wide_root
    save(wide_cnn(), root / "models", "wide")
    save(wide_cnn(None, NARROW), root / "models", "dynamic")
    save(wide_cnn(width=NARROW), root / "models", "narrow")
    photos(root / "data" / "photos", IMAGES)
    photos(root / "data" / "few", 3)
    with (
        start_server(root / "models", root / "data", port=0, device="cpu") as running,
        Client(running.address, timeout=120) as client,
    ):
        scan = client.scans.create("wide", ["deep"], "photos", k=K)
        assert [s.state for s in client.scans.watch(scan.id)][-1] == "succeeded"
        yield client, scan.id


@pytest.fixture(scope="module")
def narrow_scan(wide_scan: tuple[Client, str]) -> tuple[Client, str]:
    """The same layer with NARROW channels: for tests that check what, not how fast."""
    client, _ = wide_scan
    scan = client.scans.create("narrow", ["deep"], "photos", k=K)
    assert [s.state for s in client.scans.watch(scan.id)][-1] == "succeeded"
    return client, scan.id


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_report_of_a_512_channel_layer_fits_the_time_and_size_budget_decoding_each_image_once(
    wide_scan: tuple[Client, str], tmp_path: Path
) -> None:
    client, scan_id = wide_scan
    for cache in (ORIGINALS, ACTIVATIONS, RENDERED):
        cache.clear()
    started = time.monotonic()
    write_report(client, scan_id, tmp_path / "r", k=K)
    elapsed = time.monotonic() - started
    size = _folder_bytes(tmp_path / "r")
    mapping = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    folder = tmp_path / "r" / mapping["layers"][0]["directory"]
    patches = sorted(folder.glob("c*_r*.*"))
    assert len(patches) == WIDE * K
    assert {p.suffix for p in patches} == {".jpg"}  # photo-like patches: JPEG
    with Image.open(patches[0]) as patch:
        assert patch.size == (128, 128)
    assert elapsed < TIME_BUDGET_S, f"{elapsed:.1f} s"
    assert size < BYTES_BUDGET, f"{size / 1e6:.1f} MB"
    # each distinct source image decoded once, the layer run once per image
    assert ORIGINALS.misses <= IMAGES
    assert ACTIVATIONS.misses <= IMAGES
    print(f"\n{WIDE} ch x {K} over {IMAGES} images: {elapsed:.1f} s, {size / 1e6:.1f} MB")


def test_deep_layer_defaults_to_mask_render_and_mask_json_box_is_the_cropped_region(
    narrow_scan: tuple[Client, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, scan_id = narrow_scan
    write_report(client, scan_id, tmp_path / "r", k=2)
    mapping = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert mapping["layers"][0]["render"] == "mask"  # field 39 px > half of 64 px
    code = main(
        [
            *("--server", client.server, "neuron", scan_id, "deep", "--channel", "3"),
            *("-k", "2", "--render", "mask", "--json"),
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    _, patches, _ = client.scans.neuron(scan_id, "deep", 3, k=2, render="mask")
    assert len(doc["results"]) == len(patches) == 2
    for result, patch in zip(doc["results"], patches, strict=True):
        assert result["box"] == list(patch.patch_box)  # the region the patch shows
        assert result["rf_box"] == list(patch.hit.box)  # the receptive field, clipped
        y0, x0, y1, x1 = result["box"]
        assert (x1 - x0, y1 - y0) == Image.open(io.BytesIO(patch.png)).size


def test_report_refuses_a_non_empty_folder_unless_forced(
    narrow_scan: tuple[Client, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, scan_id = narrow_scan
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputNotEmptyError, match=r"not empty.*--force"):
        write_report(client, scan_id, out, k=1)
    code = main(["--server", client.server, "report", scan_id, "--out", str(out), "-k", "1"])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    forced = ["--server", client.server, "report", scan_id, "--out", str(out), "-k", "1"]
    assert main([*forced, "--force"]) == 0
    assert (out / "notes.txt").read_text() == "keep me" and (out / "index.html").is_file()


def test_report_progress_counts_channels() -> None:
    bar = ProgressBar("report", stream=io.StringIO(), unit="channels")
    assert bar.format(192, 192).endswith("192/192 channels (100%)")


def test_report_of_a_dynamic_size_scan_describes_layers_at_the_size_the_scan_ran_at(
    narrow_scan: tuple[Client, str], tmp_path: Path
) -> None:
    from maxact.common.preprocessing import Preprocessing

    client, _ = narrow_scan
    scan = client.scans.create(
        "dynamic", ["deep"], "few", k=1, preprocessing=Preprocessing(size=(96, 96))
    )
    assert [s.state for s in client.scans.watch(scan.id)][-1] == "succeeded"
    assert client.scans.get(scan.id).input_size == (96, 96)
    index = write_report(client, scan.id, tmp_path / "r", k=1)  # no size given
    page = index.read_text(encoding="utf-8")
    assert "INPUT_SIZE_REQUIRED" not in page
    assert "input 96×96" in page
    row = re.search(r'<tr class="layer">(.*?)</tr>', page, re.S)
    assert row is not None
    assert "Relu" in row.group(1) and f"{NARROW}×12×12" in row.group(1)
    assert "size 39x39 / stride 8x8" in row.group(1)
    assert re.search(r"All \d+ layers", page) and "All 0 layers" not in page


def test_heatmap_patch_has_a_ring_on_the_winning_unit(narrow_scan: tuple[Client, str]) -> None:
    client, scan_id = narrow_scan
    _, patches, _ = client.scans.neuron(scan_id, "deep", 5, k=3, render="heatmap")
    assert len(patches) == 3
    for patch in patches:
        pixels = np.asarray(Image.open(io.BytesIO(patch.png)).convert("RGB")).astype(int)
        # a 50% blend with the colormap is never pure white or pure black: the ring is
        white = np.argwhere((pixels == 255).all(axis=-1))
        assert len(white) > 0 and ((pixels == 0).all(axis=-1)).any()
        # the rf patch is the unit's formula field, centred on the unit: so is the ring
        centre = white.mean(axis=0)
        height, width = pixels.shape[:2]
        assert abs(centre[0] - height / 2) < 1.5 and abs(centre[1] - width / 2) < 1.5


def test_rf_patch_is_grey_only_past_the_photo_edge_and_shows_photo_pixels_outside_the_crop(
    narrow_scan: tuple[Client, str], wide_root: Path
) -> None:
    """The oracle: a grey canvas the size of patch_box with the photo pasted where it has
    pixels; unit (0, 0) reaches left of the centre crop (inside the 240x180 photo) and above
    the photo."""
    from maxact.common.preprocessing import Preprocessing

    client, _ = narrow_scan
    prep = Preprocessing(resize_shorter=64, center_crop=(64, 64))
    with client.topk(
        "wide", "deep", 7, dataset="photos", k=2, unit=(0, 0), preprocessing=prep
    ) as s:
        result = s.result()
    crop_left = (round(240 * 64 / 180) - 64) // 2 * 180 / 64  # original px left of the crop
    assert len(result.patches) == 2
    for patch in result.patches:
        y0, x0, y1, x1 = patch.patch_box
        assert x0 < 0 < crop_left < x1 and y0 < 0  # past the edge, and photo outside the crop
        source = np.asarray(Image.open(wide_root / "data" / "photos" / patch.hit.image))
        expected = np.full((y1 - y0, x1 - x0, 3), 128, dtype=np.uint8)
        sy0, sx0 = max(y0, 0), max(x0, 0)
        sy1, sx1 = min(y1, source.shape[0]), min(x1, source.shape[1])
        expected[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = source[sy0:sy1, sx0:sx1]
        got = np.asarray(Image.open(io.BytesIO(patch.png)).convert("RGB"))
        assert np.array_equal(got, expected)


def test_index_shows_readable_top1_previews_linked_to_their_channel(
    narrow_scan: tuple[Client, str], tmp_path: Path
) -> None:
    client, scan_id = narrow_scan
    index = write_report(client, scan_id, tmp_path / "r", k=1)
    page = index.read_text(encoding="utf-8")
    previews = re.findall(
        r'<a href="layers/([^/"]+)/index.html#c(\d+)"[^>]*><figure class="mini"><img src="([^"]+)"'
        r'[^>]*width="(\d+)"',
        page,
    )
    assert len(previews) == 10  # the strongest channels' top-1 patches
    for folder, channel, src, width in previews:
        assert int(width) >= 64 and (index.parent / src).is_file()
        assert src == f"layers/{folder}/c{channel}_r1.jpg"
