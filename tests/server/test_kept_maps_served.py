"""A finished scan's mask and heatmap patches come from the activation maps the scan kept: no
layer runs, and the patches equal those rendered by running the layer for each image (the
server's answer without the maps). Maps deleted or damaged on disk: the server runs the layer
and answers the same. Deleting the scan deletes its maps."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client, Preprocessing
from maxact.server.patches import cache
from tests.onnx_models import ocr_like_model, save

LAYER = "prob"  # [N, 4, H/2, W/2] of a dynamic-size detector
SHAPES = ((96, 64), (64, 96), (128, 64), (64, 64), (160, 96))
PREP = Preprocessing(resize_shorter=64, size_multiple=32, scale=1 / 255)


def _photos(folder: Path, count: int = 15) -> None:
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True)
    for i in range(count):
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        size = SHAPES[i % len(SHAPES)]
        Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC).save(folder / f"{i}.png")


@pytest.fixture
def scanned(server: Any, client: Client, model_root: Path, data_root: Path) -> tuple[str, Path]:
    save(ocr_like_model(seed=2), model_root, "det")
    _photos(data_root / "photos")
    scan = client.scans.create("det", [LAYER], "photos", k=3, preprocessing=PREP)
    assert [info.state for info in client.scans.watch(scan.id)][-1] == "succeeded"
    return scan.id, server._built.jobs.maps.root


def _clear_caches() -> None:
    for kept in (cache.ORIGINALS, cache.ACTIVATIONS, cache.RENDERED):
        kept.clear()


def _answers(client: Client, scan: str) -> list[list[tuple[Any, ...]]]:
    """Every channel's top and bottom, as mask and heatmap patches."""
    answers = []
    for channel in range(4):
        for bottom in (False, True):
            for render in ("mask", "heatmap"):
                _, patches, _ = client.scans.neuron(
                    scan, LAYER, channel, bottom=bottom, render=render
                )
                answers.append([(p.hit.image, p.patch_box, p.png) for p in patches])
    return answers


def test_kept_maps_render_without_a_layer_run_and_equal_running_the_layer(
    client: Client, scanned: tuple[str, Path]
) -> None:
    scan, maps = scanned
    assert (maps / scan / "manifest.json").is_file()
    _clear_caches()
    from_maps = _answers(client, scan)
    assert cache.ACTIVATIONS.misses == 0  # the layer never ran
    assert sum(len(patches) for patches in from_maps) == 4 * 2 * 2 * 3
    shutil.rmtree(maps / scan)
    _clear_caches()
    by_running = _answers(client, scan)
    assert cache.ACTIVATIONS.misses > 0
    assert from_maps == by_running


def test_damaged_maps_on_disk_make_the_layer_run_and_answer_the_same(
    client: Client, scanned: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    scan, maps = scanned
    _clear_caches()
    expected = _answers(client, scan)
    for values in (maps / scan).glob("*.values.npy"):
        values.write_bytes(values.read_bytes()[:100])  # truncated
    _clear_caches()
    assert _answers(client, scan) == expected
    assert cache.ACTIVATIONS.misses > 0
    assert "stored activation maps cannot be read" in caplog.text


def test_deleting_the_scan_deletes_its_maps(client: Client, scanned: tuple[str, Path]) -> None:
    scan, maps = scanned
    assert (maps / scan).is_dir()
    client.scans.delete(scan)
    assert not (maps / scan).exists()


def test_a_position_mode_scan_keeps_no_maps(client: Client, scanned: tuple[str, Path]) -> None:
    _, maps = scanned
    scan = client.scans.create("det", [LAYER], "photos", k=3, preprocessing=PREP, mode="position")
    assert [info.state for info in client.scans.watch(scan.id)][-1] == "succeeded"
    assert not (maps / scan.id).exists()
    _, patches, _ = client.scans.neuron(scan.id, LAYER, 0, render="mask")
    assert patches
