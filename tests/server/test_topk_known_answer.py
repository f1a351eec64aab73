"""Top-k over a dataset whose answer is known by construction: bright squares at known places."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client
from tests.onnx_models import bright_square_model, save

# (image id, brightness, top-left y, top-left x) of one 4x4 square per image; even positions.
SQUARES = [
    ("a/img_00.png", 250, 10, 20),
    ("a/img_01.png", 120, 0, 0),
    ("a/img_02.png", 200, 60, 60),
    ("b/img_03.png", 90, 30, 2),
    ("b/img_04.png", 230, 44, 18),
    ("img_05.png", 160, 8, 56),
]
SIZE = 64


def _write_dataset(root: Path) -> Path:
    dataset = root / "squares"
    for image_id, brightness, y, x in SQUARES:
        pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
        pixels[y : y + 4, x : x + 4] = brightness
        # texture that must come back untouched in the patch
        pixels[y : y + 4, x : x + 4, 0] = brightness - 5
        path = dataset / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    return dataset


@pytest.fixture
def squares(model_root: Path, data_root: Path) -> Path:
    save(bright_square_model(SIZE), model_root, "squares/net")
    return _write_dataset(data_root)


def _expected(k: int) -> list[tuple[str, float, int, int]]:
    ranked = sorted(SQUARES, key=lambda s: -s[1])[:k]
    return [(i, (b * 2 + (b - 5)) / 3 / 255, y, x) for i, b, y, x in ranked]


def test_topk_ranks_images_units_and_boxes_exactly(client: Client, squares: Path) -> None:
    result = client.topk("squares/net", "conv1", 0, dataset="squares", k=4).result()
    expected = _expected(4)
    assert [h.rank for h in result.hits] == [1, 2, 3, 4]
    assert [h.image for h in result.hits] == [e[0] for e in expected]
    assert [h.unit for h in result.hits] == [(y // 2, x // 2) for _, _, y, x in expected]
    assert [h.box for h in result.hits] == [(y, x, y + 4, x + 4) for _, _, y, x in expected]
    assert [h.score for h in result.hits] == pytest.approx([e[1] for e in expected], rel=1e-6)
    assert result.images_scanned == len(SQUARES)


def test_patch_pixels_equal_the_original_inside_the_box(client: Client, squares: Path) -> None:
    result = client.topk("squares/net", "conv1", 0, dataset="squares", k=3).result()
    assert len(result.patches) == 3
    for patch in result.patches:
        y0, x0, y1, x1 = patch.hit.box
        original = np.asarray(Image.open(squares / patch.hit.image).convert("RGB"))
        received = np.asarray(Image.open(io.BytesIO(patch.png)).convert("RGB"))
        np.testing.assert_array_equal(received, original[y0:y1, x0:x1])


def test_pooled_layer_maps_units_to_their_six_pixel_field(client: Client, squares: Path) -> None:
    # pool1 = MaxPool 2x2/2 over conv1 4x4/2: RF 6, stride 4. Square at (10, 20) lies in
    # conv1 unit (5, 10) which pool1 unit (2, 5) covers; its field is rows 8..14, cols 20..26.
    result = client.topk("squares/net", "pool1", 0, dataset="squares", k=1).result()
    (hit,) = result.hits
    assert hit.image == "a/img_00.png"
    assert hit.unit == (2, 5)
    assert hit.box == (8, 20, 14, 26)


def test_bottom_k_returns_the_weakest_responses(client: Client, squares: Path) -> None:
    result = client.topk("squares/net", "conv1", 0, dataset="squares", k=2, bottom=True).result()
    # every image has black regions: the weakest max is the dimmest square
    weakest = sorted(SQUARES, key=lambda s: s[1])[:2]
    assert [h.image for h in result.hits] == [s[0] for s in weakest]


def test_resized_images_map_boxes_back_into_original_pixels(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(bright_square_model(SIZE), model_root, "net")
    dataset = data_root / "big"
    dataset.mkdir()
    pixels = np.zeros((SIZE * 2, SIZE * 2, 3), dtype=np.uint8)
    pixels[40:48, 80:88] = 255  # an 8x8 square at (40, 80) -> 4x4 at (20, 40) after halving
    Image.fromarray(pixels).save(dataset / "big.png")
    from maxact.client import Preprocessing

    result = client.topk(
        "net", "conv1", 0, dataset="big", k=1, preprocessing=Preprocessing(size=(SIZE, SIZE))
    ).result()
    (hit,) = result.hits
    assert hit.unit == (10, 20)
    assert hit.input_box == (20, 40, 24, 44)
    assert hit.box == (40, 80, 48, 88)
