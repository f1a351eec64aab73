"""`maxact report SCAN --out DIR` against the real in-process server: the gallery's files, safe
folder names for layer names with '/', ':' and '.', the overview grid, and the pages in headless
Chromium (rows, images, no console errors, no broken images, sorting and filtering)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from maxact.client import Client
from maxact.client.cli.main import main
from maxact.client.montage import GAP, MARGIN
from maxact.client.report.writer import OVERVIEW_COLUMNS, OVERVIEW_TILE, patch_file, safe_names
from tests.browser import LOAD_EVERY_IMAGE, Browser, severe
from tests.datasets import slow_scan, tinted_images
from tests.onnx_models import random_cnn, save

# tensor names as exporters write them
RENAMED = {"conv_a": "stem/conv.a:0", "relu_a": "stem/relu.a:0", "relu_b": "block.1/relu_b:0"}
LAYERS = ["stem/relu.a:0", "block.1/relu_b:0"]
K = 5
DEAD = 6
CLASSES = ("red", "green", "blue")


def _exporter_named_cnn() -> onnx.ModelProto:
    """random_cnn (8 then 6 channels, 32x32 input) with '/', ':' and '.' in its tensor names,
    and channel DEAD of stem/relu.a:0 dead (a bias no image can overcome)."""
    model = random_cnn(seed=3, size=32)
    bias = next(init for init in model.graph.initializer if init.name == "b_a")
    values = numpy_helper.to_array(bias).copy()
    values[DEAD] = -1000.0
    bias.CopyFrom(numpy_helper.from_array(values, "b_a"))
    for node in model.graph.node:
        node.input[:] = [RENAMED.get(n, n) for n in node.input]
        node.output[:] = [RENAMED.get(n, n) for n in node.output]
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def finished_scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, str]]:
    """One server and one finished scan for the module: the reports only read it."""
    from maxact.server.app import start_server

    root = tmp_path_factory.mktemp("report")
    model_root, data_root = root / "models", root / "data"
    save(_exporter_named_cnn(), model_root, "exported")
    tinted_images(data_root / "tinted", CLASSES)
    with (
        start_server(model_root, data_root, port=0, device="cpu") as running,
        Client(running.address, timeout=120) as client,
    ):
        scan = client.scans.create("exported", LAYERS, "tinted", k=K)
        assert [s.state for s in client.scans.watch(scan.id)][-1] == "succeeded"
        yield client, scan.id


def _report(
    client: Client, scan_id: str, out: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, dict]:
    """`maxact report` into `out`: (out, its report.json)."""
    code = main(["--server", client.server, "report", scan_id, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == f"wrote {out / 'index.html'}"
    return out, json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_report_folder_has_index_pages_patches_overviews_and_a_name_mapping(
    finished_scan: tuple[Client, str],
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    client, scan_id = finished_scan
    out, mapping = _report(client, scan_id, tmp_path / "gallery", capsys)
    assert mapping["scan"]["id"] == scan_id and mapping["scan"]["state"] == "succeeded"
    assert [layer["name"] for layer in mapping["layers"]] == LAYERS
    index = (out / "index.html").read_text(encoding="utf-8")
    for layer in mapping["layers"]:
        folder = out / layer["directory"]
        assert re.fullmatch(r"layers/[A-Za-z0-9_-]+", layer["directory"])
        assert layer["page"] in index and layer["overview"] in index  # linked from the index
        stats = client.scans.statistics(scan_id, layer["name"])
        assert layer["channels"] == len(stats.channels)
        expected = {"index.html", "overview.jpg"} | {
            patch_file(c.channel, rank) for c in stats.channels for rank in range(1, K + 1)
        }
        if any(c.class_mean for c in stats.channels):  # labelled: the classes page too
            expected |= {"classes.html", "classes"}
        assert {p.name for p in folder.iterdir()} == expected
        # tiny fields keep the server's exact PNG crops (fitted into 128 px), byte for byte
        _, patches, _ = client.scans.neuron(scan_id, layer["name"], 2, k=K, patch_size=128)
        assert len(patches) == K
        for patch in patches:
            assert (folder / patch_file(2, patch.hit.rank)).read_bytes() == patch.png
        page = (folder / "index.html").read_text(encoding="utf-8")
        rows = _page_data(page)
        assert [row["channel"] for row in rows] == [c.channel for c in stats.channels]
        dead = [c.channel for c in stats.channels if c.dead]
        assert [row["channel"] for row in rows if row["dead"]] == dead
        assert all(len(row["patches"]) == K for row in rows)
        assert 'href="overview.jpg"' in page and 'src="../../static/layer.js"' in page
        assert "http://" not in page and "https://" not in page  # nothing from the network
    assert (out / "static" / "report.css").is_file() and (out / "static" / "layer.js").is_file()
    # the index shows the model's layers with shapes and receptive fields
    assert "stem/conv.a:0" in index and "size 3x3 / stride 1x1 / padding 1x1" in index
    assert "8×32×32" in index


def _page_data(page: str) -> list[dict]:
    """The neuron rows a layer page's script draws (JSON in the page, HTML-escaped)."""
    match = re.search(r'<script type="application/json" id="neuron-data">(.*?)</script>', page)
    assert match is not None
    return json.loads(match.group(1))


def test_safe_names_are_distinct_file_names_even_ignoring_case() -> None:
    names = ["conv1", "Conv1", "a/b", "a_b", "a:b", "a.b", "../../etc", "", "x" * 300]
    safe = safe_names(names)
    assert safe["conv1"] == "conv1"  # a name that is already safe stays readable
    assert len({s.lower() for s in safe.values()}) == len(names)
    for original, name in safe.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name), (original, name)


def test_overview_png_has_one_top1_tile_per_channel(
    finished_scan: tuple[Client, str],
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    client, scan_id = finished_scan
    out, mapping = _report(client, scan_id, tmp_path / "gallery", capsys)
    assert [layer["name"] for layer in mapping["layers"]] == LAYERS
    for layer in mapping["layers"]:
        columns = min(OVERVIEW_COLUMNS, layer["channels"])
        with Image.open(out / layer["overview"]) as overview:
            assert overview.width == 2 * MARGIN + columns * OVERVIEW_TILE + (columns - 1) * GAP
            assert overview.height > OVERVIEW_TILE


def test_report_of_a_cancelled_scan_exits_1_with_scan_not_finished(
    client: Client,
    model_root: Path,
    data_root: Path,
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    slow_scan(model_root, data_root, 150)
    scan = client.scans.create("heavy", ["relu5"], "many", k=3)
    client.scans.cancel(scan.id)
    code = main(["--server", client.server, "report", scan.id, "--out", str(tmp_path / "r")])
    assert code == 1 and "SCAN_NOT_FINISHED" in capsys.readouterr().err


# ---------------------------------------------------------------- in a real browser


ROW_ORDER = (
    "return Array.prototype.slice.call(document.querySelectorAll('section.neuron'))"
    ".filter(function (r) { return !r.hidden; })"
    ".map(function (r) { return parseInt(r.getAttribute('data-channel'), 10); });"
)


@pytest.mark.slow
def test_gallery_renders_every_row_and_image_without_errors_and_sorts_by_selectivity(
    finished_scan: tuple[Client, str],
    browser: Browser,
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    client, scan_id = finished_scan
    out, mapping = _report(client, scan_id, tmp_path / "gallery", capsys)
    layer = mapping["layers"][0]
    stats = client.scans.statistics(scan_id, layer["name"])

    browser.open((out / layer["page"]).resolve().as_uri())
    assert browser.run("return document.readyState") == "complete"
    assert browser.run("return document.querySelectorAll('section.neuron').length") == len(
        stats.channels
    )
    images = browser.run_async(LOAD_EVERY_IMAGE)
    assert len(images) == len(stats.channels) * K
    broken = [img["src"] for img in images if not img["complete"] or img["width"] <= 0]
    assert broken == []
    assert browser.run("return document.getElementById('count').textContent") == (
        f"{len(stats.channels)} of {len(stats.channels)} neurons"
    )
    shot = browser.screenshot(tmp_path / "layer-page.png")
    assert Image.open(shot).width > 0

    # sorting by selectivity reorders the rows: descending, ties by channel
    assert browser.run(ROW_ORDER) == [c.channel for c in stats.channels]
    by_selectivity = [
        c.channel for c in sorted(stats.channels, key=lambda c: (-c.selectivity, c.channel))
    ]
    assert by_selectivity != [c.channel for c in stats.channels]  # the data makes it matter
    browser.select("#sort", "selectivity")
    assert browser.run(ROW_ORDER) == by_selectivity
    browser.screenshot(tmp_path / "layer-page-by-selectivity.png")

    # filters: hide dead neurons, and a text filter on the channel
    browser.run(
        "var b = document.getElementById('hide-dead'); b.checked = true;"
        "b.dispatchEvent(new Event('change'));"
    )
    assert [c.channel for c in stats.channels if c.dead] == [DEAD]
    assert sorted(browser.run(ROW_ORDER)) == [c.channel for c in stats.channels if not c.dead]
    browser.run(
        "var f = document.getElementById('filter'); f.value = 'c3';"
        "f.dispatchEvent(new Event('input'));"
    )
    assert browser.run(ROW_ORDER) == ([] if stats.channels[3].dead else [3])

    # the index opens too, its overview thumbnails load, and nothing logged an error
    browser.open((out / "index.html").resolve().as_uri())
    assert browser.run("return document.querySelectorAll('tr.layer').length") == len(LAYERS)
    thumbs = browser.run_async(LOAD_EVERY_IMAGE)
    assert thumbs and all(img["width"] > 0 for img in thumbs)
    browser.screenshot(tmp_path / "index.png")
    assert severe(browser.console()) == []
