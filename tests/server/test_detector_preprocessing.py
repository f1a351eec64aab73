"""Detector / OCR preprocessing end to end: per-image sizes (resize_shorter + size_multiple, the
PP-OCR rule) batched by size, and letterbox, through the real server and client. Oracles: plain
onnxruntime + numpy at hand-computed per-image sizes, and hand-set squares whose exact box in
the original image is known."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from PIL import Image

from maxact.client import Client, MaxactError, Preprocessing
from tests.onnx_models import bright_square_model, layer_outputs, ocr_like_model, save

# original (height, width) -> model input after resize_shorter 64 and size_multiple 32, by hand:
# the shorter side becomes 64, the longer one is scaled and rounded, then each side goes to the
# nearest multiple of 32 (at least 32): 50x90 -> 64x115.2 -> 64x115 -> 64x128.
PER_IMAGE_SIZES = {
    (50, 90): (64, 128),
    (90, 50): (128, 64),
    (64, 64): (64, 64),
    (40, 100): (64, 160),
    (70, 120): (64, 96),
}
OCR_PREP = Preprocessing(resize_shorter=64, size_multiple=32, scale=1 / 255)
LAYER, K = "sum", 5


@pytest.fixture
def texts(model_root: Path, data_root: Path) -> Path:
    """The OCR-like model and a dataset of noise images of five shapes, two of each."""
    save(ocr_like_model(), model_root, "ocr")
    folder = data_root / "texts"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i, (height, width) in enumerate([*PER_IMAGE_SIZES, *PER_IMAGE_SIZES]):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:02d}.png")
    return folder


def brute_force_top(folder: Path, channel: int, k: int) -> list[tuple[str, float, tuple]]:
    """(image id, score, unit) of the k best images: each image resized (Pillow bilinear) to
    its hand-computed size and run alone through plain onnxruntime; ties: earlier image."""
    model = ocr_like_model()
    found = []
    for index, path in enumerate(sorted(folder.iterdir())):
        image = Image.open(path).convert("RGB")
        height, width = PER_IMAGE_SIZES[(image.height, image.width)]
        pixels = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)
        array = (pixels * np.float32(1 / 255)).transpose(2, 0, 1)[None]
        activation = layer_outputs(model, [LAYER], array)[LAYER][0, channel]
        y, x = np.unravel_index(int(np.argmax(activation)), activation.shape)
        found.append((-float(activation[y, x]), index, path.name, (int(y), int(x))))
    return [(name, -score, unit) for score, _, name, unit in sorted(found)[:k]]


def _same_ranking(hits, expected) -> None:  # type: ignore[no-untyped-def]
    assert [h.image for h in hits] == [name for name, _, _ in expected]
    assert [tuple(h.unit) for h in hits] == [unit for _, _, unit in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s, _ in expected], rtol=1e-5)


def test_resize_shorter_with_size_multiple_equals_brute_force_at_per_image_sizes(
    client: Client, texts: Path
) -> None:
    for channel in (0, 3):
        expected = brute_force_top(texts, channel, K)
        result = client.topk(
            "ocr", LAYER, channel, dataset="texts", k=K, preprocessing=OCR_PREP
        ).result()
        _same_ranking(result.hits, expected)
        streamed = client.topk_images(
            "ocr", LAYER, channel, [texts], k=K, preprocessing=OCR_PREP
        ).result()
        _same_ranking(streamed.hits, expected)
        assert [h.box for h in streamed.hits] == [h.box for h in result.hits]
    assert result.preprocessing is not None
    assert (result.preprocessing.resize_shorter, result.preprocessing.size_multiple) == (64, 32)
    # position mode suppresses overlapping fields with each size's own fields; its best unit
    # is the best image's best unit
    position = client.topk(
        "ocr", LAYER, 3, dataset="texts", k=K, mode="position", preprocessing=OCR_PREP
    ).result()
    scores = [h.score for h in position.hits]
    assert len(scores) == K and scores == sorted(scores, reverse=True)
    assert (position.hits[0].image, position.hits[0].unit) == (expected[0][0], expected[0][2])
    assert result.preprocessing.center_crop is None


def test_persisted_scan_with_per_image_sizes_answers_neuron_queries_like_the_stream(
    client: Client, texts: Path
) -> None:
    created = client.scans.create("ocr", [LAYER], "texts", k=K, preprocessing=OCR_PREP)
    info = list(client.scans.watch(created.id))[-1]
    assert info.state == "succeeded", info.error
    assert info.preprocessing is not None and info.preprocessing.size_multiple == 32
    _, patches, _ = client.scans.neuron(info.id, LAYER, 3, k=K)
    expected = brute_force_top(texts, 3, K)
    _same_ranking([p.hit for p in patches], expected)
    streamed = client.topk("ocr", LAYER, 3, dataset="texts", k=K, preprocessing=OCR_PREP)
    assert [p.hit.box for p in patches] == [h.box for h in streamed.result().hits]


def test_size_the_model_cannot_take_names_the_cause_and_the_side_multiple(
    client: Client, texts: Path
) -> None:
    with pytest.raises(MaxactError) as caught:
        client.topk(
            "ocr", LAYER, 0, dataset="texts", preprocessing=Preprocessing(resize_shorter=64)
        ).result()
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INPUT_SIZE_UNSUPPORTED"
    assert "multiples of 32" in error.message and "--size-multiple 32" in error.message
    with pytest.raises(MaxactError) as caught:
        client.topk(
            "ocr", LAYER, 0, dataset="texts", preprocessing=Preprocessing(size=(100, 100))
        ).result()
    assert caught.value.reason == "INPUT_SIZE_UNSUPPORTED"
    assert "100x100" in caught.value.message and "multiples of 32" in caught.value.message
    # the catalogue at such a size refuses with the same hint instead of listing `?` shapes
    with pytest.raises(MaxactError) as caught:
        client.get_model("ocr", size=(100, 100))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "INPUT_SIZE_UNSUPPORTED"
    assert "100x100" in caught.value.message and "--size-multiple 32" in caught.value.message
    assert {layer.name for layer in client.get_model("ocr", size=(96, 128)).layers} >= {"prob"}


# Letterbox: (original height, width) -> a 2x2 square (brightness) at (y, x) of the original.
# Inside a 64x64 letterbox a 16x32 image is scaled by 2 (16x32 -> 32x64, rows 32.. padded),
# a 32x16 one by 2 (columns 32.. padded), a 40x64 one by 1 (rows 40.. padded). Upscaled by 2
# (Pillow bilinear), a 2x2 square at (y, x) makes conv1's 4x4 stride-2 window at (2y, 2x)
# the unique best: unit (y, x), exact field [2y, 2y+4) in the input = [y, y+2) original.
LETTERBOXED = {
    "a_wide.png": ((16, 32), (4, 10), 250),
    "b_tall.png": ((32, 16), (12, 4), 200),
    "c_flat.png": ((40, 64), (20, 30), 150),
}


def test_letterbox_boxes_map_back_to_the_exact_hand_set_square(
    client: Client, model_root: Path, data_root: Path
) -> None:
    model = bright_square_model(64)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"  # a dynamic-size model
    onnx.save(model, str(model_root / "net.onnx"))
    folder = data_root / "boxes"
    folder.mkdir()
    expected = {}
    for name, ((height, width), (y, x), value) in LETTERBOXED.items():
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        side = 2 if height < 40 else 4  # scale 1 for the 40x64 image: a 4x4 square
        pixels[y : y + side, x : x + side] = value
        Image.fromarray(pixels).save(folder / name)
        expected[name] = [y, x, y + side, x + side]
    prep = Preprocessing(letterbox=(64, 64), scale=1 / 255)
    result = client.topk("net", "conv1", 0, dataset="boxes", k=3, preprocessing=prep).result()
    assert [h.image for h in result.hits] == list(LETTERBOXED)  # brightest first
    assert {h.image: list(h.box) for h in result.hits} == expected
    assert result.preprocessing is not None and result.preprocessing.letterbox == (64, 64)


def test_letterbox_pads_with_pad_value_in_pixel_units(
    client: Client, model_root: Path, data_root: Path
) -> None:
    """conv1 channel 0 is the window's mean brightness / 255: a white pad (255) beats a dark
    image, so the best unit lies in the padding, below the 16 rows the 16x32 image fills."""
    model = bright_square_model(64)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    onnx.save(model, str(model_root / "net.onnx"))
    folder = data_root / "dark"
    folder.mkdir()
    Image.fromarray(np.full((16, 32, 3), 10, dtype=np.uint8)).save(folder / "dark.png")
    prep = Preprocessing(letterbox=(64, 64), pad_value=255, scale=1 / 255)
    (hit,) = client.topk("net", "conv1", 0, dataset="dark", k=1, preprocessing=prep).result().hits
    assert hit.score == pytest.approx(1.0) and hit.unit[0] >= 16  # rows 32.. of the input
