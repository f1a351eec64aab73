"""One render per layer everywhere (issue 19, points 2 and 3): the report's layer page, its
classes page and `maxact class` render a deep layer's patches as `mask` (its field exceeds half
the input), judged at the size the scan actually ran at, also under a per-image
`resize_shorter`; `class --render` chooses otherwise. Real server, real client, real CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client
from maxact.client.cli.main import main
from maxact.client.report.writer import write_report
from maxact.common.preprocessing import Preprocessing
from tests.onnx_models import save
from tests.test_report_newcomer import NARROW, wide_cnn

CLASSES = ("animals", "buildings", "texts")
PER_CLASS = 4
LAYER = "deep"  # field 39 px: more than half of the 64 px shorter side, far less than 180 px


def _photos(folder: Path, count: int, size: tuple[int, int], seed: int) -> None:
    """Smooth random colour fields of `size` (width, height): photo-like, not noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = rng.integers(0, 255, size=(6, 8, 3)).astype(np.uint8)
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, str, str]]:
    """(client, a per-image-size scan at resize_shorter 64, the same at resize_shorter 256)
    of a dynamic-size model over class folders of photos of three different shapes."""
    from maxact.server.app import start_server

    root = tmp_path_factory.mktemp("render")
    save(wide_cnn(None, NARROW), root / "models", "dynamic")
    shapes = ((240, 180), (180, 240), (200, 200))
    for index, (name, size) in enumerate(zip(CLASSES, shapes, strict=True)):
        _photos(root / "data" / "labelled" / name, PER_CLASS, size, seed=index)
    with (
        start_server(root / "models", root / "data", port=0, device="cpu") as running,
        Client(running.address, timeout=120) as client,
    ):
        ids = []
        for shorter in (64, 256):
            prep = Preprocessing(resize_shorter=shorter, scale=1 / 255)
            scan = client.scans.create("dynamic", [LAYER], "labelled", k=3, preprocessing=prep)
            assert [s.state for s in client.scans.watch(scan.id)][-1] == "succeeded"
            ids.append(scan.id)
        yield client, ids[0], ids[1]


def test_report_of_a_per_image_size_scan_judges_the_field_at_the_size_it_ran_at(
    scans: tuple[Client, str, str], tmp_path: Path
) -> None:
    client, small, large = scans
    renders = {}
    for scan_id in (small, large):
        write_report(client, scan_id, tmp_path / scan_id, k=1, patch_size=64)
        mapping = json.loads((tmp_path / scan_id / "report.json").read_text(encoding="utf-8"))
        renders[scan_id] = mapping["layers"][0]["render"]
    assert renders == {small: "mask", large: "rf"}  # 39 px > 64 / 2, but < 256 / 2
    page = (tmp_path / small / "index.html").read_text(encoding="utf-8")
    assert "input 64×64" not in page  # per-image sizes: no single input size claimed


def test_classes_page_patches_are_rendered_as_the_layer_page(
    scans: tuple[Client, str, str], tmp_path: Path
) -> None:
    client, small, _ = scans
    write_report(client, small, tmp_path / "r", k=1, patch_size=64)
    mapping = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    folder = tmp_path / "r" / mapping["layers"][0]["directory"]
    answer = client.analysis.class_channels(
        small, LAYER, CLASSES[0], top=5, k=3, patch_size=64, render="mask"
    )
    rf = client.analysis.class_channels(small, LAYER, CLASSES[0], top=5, k=3, patch_size=64)
    assert answer.channels
    for entry, rf_entry in zip(answer.channels, rf.channels, strict=True):
        for patch, rf_patch in zip(entry.patches, rf_entry.patches, strict=True):
            written = folder / f"classes/c{entry.channel.channel}_r{patch.hit.rank}.png"
            assert written.read_bytes() == patch.png != rf_patch.png


def test_class_renders_like_the_layer_unless_told_and_its_files_show_the_mask_box(
    scans: tuple[Client, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, small, large = scans
    common = ("--server", client.server, "class", small, LAYER, CLASSES[0], "--top", "2")
    assert main([*common, "--json", "--out", str(tmp_path / "m")]) == 0
    chosen = json.loads(capsys.readouterr().out)
    results = [r for c in chosen["top_channels"] for r in c["results"]]
    assert results and all("rf_box" in r for r in results)  # mask: box is the mask's
    for result in results:
        y0, x0, y1, x1 = result["box"]
        with Image.open(tmp_path / "m" / result["patch"]) as patch:
            assert patch.size == (x1 - x0, y1 - y0)
    assert main([*common, "--json", "--render", "rf"]) == 0
    told = json.loads(capsys.readouterr().out)
    assert all("rf_box" not in r for c in told["top_channels"] for r in c["results"])
    assert main([*common, "--json", "--render", "mask", "--mask-quantile", "0.5"]) == 0
    wider = json.loads(capsys.readouterr().out)
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in (r["box"] for r in results)]
    wider_area = [
        (b[2] - b[0]) * (b[3] - b[1])
        for b in (r["box"] for c in wider["top_channels"] for r in c["results"])
    ]
    assert sum(wider_area) > sum(area)  # a lower quantile, a larger mask
    rf_scan = ("--server", client.server, "class", large, LAYER, CLASSES[0], "--json")
    assert main([*rf_scan, "--top", "1"]) == 0  # the field fits a 256 px side: rf
    doc = json.loads(capsys.readouterr().out)
    assert all("rf_box" not in r for c in doc["top_channels"] for r in c["results"])
