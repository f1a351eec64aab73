"""Patch rendering options (rf with a grey border, heatmap, NetDissect-style mask, patch_size),
through the real server and client, on a deep synthetic model whose answer is known."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client import Client, MaxactError, Patch, Preprocessing
from tests.onnx_models import bright_square_model, finish, save

SIZE = 64
# six 3x3 averaging convs (pad 1), two of them stride 2: relu6 has a 29-pixel field with
# stride 4, far larger than the 8x8 square it peaks on
STRIDES = [1, 2, 1, 2, 1, 1]
SQUARE = (24, 32, 32, 40)  # y0, x0, y1, x1 of the bright square in "middle.png"
CORNER = (0, 0, 8, 8)  # ... in "corner.png"
RF_SIZE = 29
# the mask's share of the image: the square's area
SQUARE_QUANTILE = 1 - 64 / SIZE**2


def deep_averaging_model() -> object:
    nodes, initializers, previous, channels = [], [], "image", 3
    for i, stride in enumerate(STRIDES, start=1):
        weights = np.full((1, channels, 3, 3), 1.0 / (9 * channels), dtype=np.float32)
        initializers.append(numpy_helper.from_array(weights, f"w{i}"))
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
        previous, channels = f"relu{i}", 1
    graph = helper.make_graph(
        nodes,
        "deep_averaging",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", 1, 16, 16])],
        initializer=initializers,
    )
    return finish(graph)


def _square_image(box: tuple[int, int, int, int], brightness: int) -> np.ndarray:
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    y0, x0, y1, x1 = box
    pixels[y0:y1, x0:x1] = brightness
    return pixels


@pytest.fixture
def deep(model_root: Path, data_root: Path) -> Path:
    save(deep_averaging_model(), model_root, "deep")  # type: ignore[arg-type]
    dataset = data_root / "squares"
    dataset.mkdir()
    Image.fromarray(_square_image(SQUARE, 250)).save(dataset / "middle.png")
    Image.fromarray(_square_image(CORNER, 200)).save(dataset / "corner.png")
    return dataset


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _top(client: Client, **options: object):  # type: ignore[no-untyped-def]
    return client.topk("deep", "relu6", 0, dataset="squares", k=2, **options).result()


def _resized_top1(client: Client, model: str, layer: str, dataset: str, **options: Any) -> Patch:
    """The one patch of a top-1 on channel 0 of a one-image dataset resized to SIZE x SIZE."""
    resize = Preprocessing(size=(SIZE, SIZE))
    stream = client.topk(model, layer, 0, dataset=dataset, k=1, preprocessing=resize, **options)
    (patch,) = stream.result().patches
    return patch


def test_mask_box_matches_the_square_and_is_tighter_than_the_rf_box(
    client: Client, deep: Path
) -> None:
    result = _top(client, render="mask", mask_quantile=SQUARE_QUANTILE)
    patch = next(p for p in result.patches if p.hit.image == "middle.png")
    rf_y0, rf_x0, rf_y1, rf_x1 = patch.hit.box  # the exact receptive field, clipped
    assert rf_y1 - rf_y0 == rf_x1 - rf_x0 == RF_SIZE
    assert patch.patch_box is not None
    y0, x0, y1, x1 = patch.patch_box
    assert np.abs(np.subtract(patch.patch_box, SQUARE)).max() <= 1
    assert rf_y0 < y0 and rf_x0 < x0 and y1 < rf_y1 and x1 < rf_x1
    assert patch.clipped_fraction == 0.0
    original = np.asarray(Image.open(deep / "middle.png").convert("RGB"))
    np.testing.assert_array_equal(_png(patch.png), original[y0:y1, x0:x1])


def test_mask_with_the_default_quantile_is_still_tighter_than_the_rf_box(
    client: Client, deep: Path
) -> None:
    result = _top(client, render="mask")
    patch = next(p for p in result.patches if p.hit.image == "middle.png")
    assert patch.patch_box is not None
    y0, x0, y1, x1 = patch.patch_box
    ry0, rx0, ry1, rx1 = patch.hit.box
    assert ry0 < y0 <= SQUARE[0] and rx0 < x0 <= SQUARE[1]
    assert SQUARE[2] <= y1 < ry1 and SQUARE[3] <= x1 < rx1


def test_mask_box_maps_back_into_the_pixels_of_a_resized_original(
    client: Client, deep: Path, data_root: Path
) -> None:
    dataset = data_root / "big"
    dataset.mkdir()
    big = np.repeat(np.repeat(_square_image(SQUARE, 250), 2, axis=0), 2, axis=1)
    Image.fromarray(big).save(dataset / "big.png")
    patch = _resized_top1(
        client, "deep", "relu6", "big", render="mask", mask_quantile=SQUARE_QUANTILE
    )
    assert patch.patch_box is not None
    assert np.abs(np.subtract(patch.patch_box, [2 * v for v in SQUARE])).max() <= 2


def test_rf_patch_at_the_border_is_grey_outside_the_image_with_the_clipped_fraction(
    client: Client, deep: Path
) -> None:
    result = _top(client)  # default render: rf
    patch = next(p for p in result.patches if p.hit.image == "corner.png")
    assert patch.patch_box is not None
    y0, x0, y1, x1 = patch.patch_box
    assert (y1 - y0, x1 - x0) == (RF_SIZE, RF_SIZE)
    assert y0 < 0 and x0 < 0  # the formula field leaves the image
    assert patch.hit.box == (0, 0, y1, x1)  # hit.box stays clipped
    inside = y1 * x1
    assert patch.clipped_fraction == pytest.approx(1 - inside / RF_SIZE**2)
    assert patch.clipped_fraction > 0
    pixels = _png(patch.png)
    assert pixels.shape[:2] == (RF_SIZE, RF_SIZE)
    assert (pixels[:-y0, :] == 128).all() and (pixels[:, :-x0] == 128).all()
    original = np.asarray(Image.open(deep / "corner.png").convert("RGB"))
    np.testing.assert_array_equal(pixels[-y0:, -x0:], original[:y1, :x1])


def test_rf_patch_inside_the_image_is_the_plain_crop_without_grey(
    client: Client, deep: Path
) -> None:
    result = _top(client, render="rf")
    patch = next(p for p in result.patches if p.hit.image == "middle.png")
    y0, x0, y1, x1 = patch.hit.box
    assert patch.patch_box == patch.hit.box and patch.clipped_fraction == 0.0
    original = np.asarray(Image.open(deep / "middle.png").convert("RGB"))
    np.testing.assert_array_equal(_png(patch.png), original[y0:y1, x0:x1])


def test_heatmap_is_the_rf_patch_size_and_differs_from_the_plain_patch(
    client: Client, deep: Path
) -> None:
    plain = {p.hit.image: p for p in _top(client).patches}
    heat = {p.hit.image: p for p in _top(client, render="heatmap").patches}
    assert set(plain) == set(heat) == {"middle.png", "corner.png"}
    for image, patch in heat.items():
        rf, hm = _png(plain[image].png), _png(patch.png)
        assert hm.shape == rf.shape
        assert patch.patch_box == plain[image].patch_box
        assert patch.clipped_fraction == plain[image].clipped_fraction
        assert (hm != rf).any()
    # hottest where the square is: the overlay is red-ish there, blue-ish far from it
    middle = _png(heat["middle.png"].png).astype(int)
    y0, x0, _, _ = heat["middle.png"].patch_box  # type: ignore[misc]
    cy, cx = SQUARE[0] + 4 - y0, SQUARE[1] + 4 - x0
    window = middle[cy - 2 : cy + 3, cx - 2 : cx + 3].reshape(-1, 3)
    ring = (window == 255).all(axis=1) | (window == 0).all(axis=1)  # the winning-unit marker
    centre = window[~ring].mean(axis=0)
    corner = middle[0, 0]
    assert centre[0] > centre[2] and corner[2] > corner[0]
    # the grey border is not overlaid
    corner_patch = _png(heat["corner.png"].png)
    assert (corner_patch[0, 0] == 128).all()


def test_patch_size_letterboxes_every_patch_to_the_same_square(client: Client, deep: Path) -> None:
    for render in ("rf", "heatmap", "mask"):
        result = _top(client, render=render, patch_size=48, mask_quantile=0.99)
        assert len(result.patches) == 2
        for patch in result.patches:
            assert Image.open(io.BytesIO(patch.png)).size == (48, 48)


def test_patch_size_keeps_the_aspect_with_a_grey_letterbox(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(bright_square_model(SIZE), model_root, "net")
    dataset = data_root / "wide"
    dataset.mkdir()
    pixels = np.full((SIZE, 2 * SIZE, 3), 255, dtype=np.uint8)  # 64x128: the input is squeezed
    Image.fromarray(pixels).save(dataset / "wide.png")
    patch = _resized_top1(client, "net", "conv1", "wide", patch_size=32)
    assert patch.hit.box[2] - patch.hit.box[0] == 4 and patch.hit.box[3] - patch.hit.box[1] == 8
    pixels = _png(patch.png)
    assert pixels.shape == (32, 32, 3)
    assert (pixels[:8] == 128).all() and (pixels[-8:] == 128).all()  # letterbox bands
    assert (pixels[8:24] == 255).all()


@pytest.mark.parametrize("quantile", [0.0, 1.0, -0.5, 1.5])
def test_mask_quantile_outside_zero_one_is_invalid_argument(
    client: Client, deep: Path, quantile: float
) -> None:
    with pytest.raises(MaxactError) as caught:
        _top(client, render="mask", mask_quantile=quantile)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "INVALID_MASK_QUANTILE"


def test_negative_or_huge_patch_size_is_invalid_argument(client: Client, deep: Path) -> None:
    for size in (-1, 100_000):
        with pytest.raises(MaxactError) as caught:
            _top(client, patch_size=size)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.reason == "INVALID_PATCH_SIZE"


def test_heatmap_or_mask_on_a_flat_layer_is_failed_precondition(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(bright_square_model(SIZE), model_root, "net")
    dataset = data_root / "one"
    dataset.mkdir()
    Image.fromarray(_square_image(SQUARE, 250)).save(dataset / "one.png")
    with pytest.raises(MaxactError) as caught:
        client.topk("net", "features", 0, dataset="one", k=1, render="mask").result()
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "RENDER_NEEDS_SPATIAL_LAYER"


def test_neuron_query_renders_the_same_patches_as_a_live_topk(client: Client, deep: Path) -> None:
    scan = client.scans.create("deep", ["relu6"], "squares", k=2)
    states = [info.state for info in client.scans.watch(scan.id)]
    assert states[-1] == "succeeded"
    for options in (
        {"render": "rf"},
        {"render": "heatmap", "patch_size": 40},
        {"render": "mask", "mask_quantile": SQUARE_QUANTILE},
    ):
        _, patches, _ = client.scans.neuron(scan.id, "relu6", 0, **options)  # type: ignore[arg-type]
        live = _top(client, **options)
        assert [p.patch_box for p in patches] == [p.patch_box for p in live.patches]
        assert [p.clipped_fraction for p in patches] == [p.clipped_fraction for p in live.patches]
        assert [p.png for p in patches] == [p.png for p in live.patches]
    with pytest.raises(MaxactError) as caught:
        client.scans.neuron(scan.id, "relu6", 0, render="mask", mask_quantile=1.0)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_topk_and_neuron_render_flags_write_letterboxed_mask_patches(
    server: object, deep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from maxact.client.cli.main import main

    address = server.address  # type: ignore[attr-defined]
    flags = ["--render", "mask", "--mask-quantile", "0.99", "--patch-size", "40"]
    out = tmp_path / "topk"
    argv = ["--server", address, "topk", "deep", "relu6", "--channel", "0", "-k", "2"]
    assert main([*argv, "--dataset", "squares", *flags, "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert Image.open(out / "rank_1.png").size == (40, 40)
    with Client(address) as client:
        scan = client.scans.create("deep", ["relu6"], "squares", k=2)
        assert [info.state for info in client.scans.watch(scan.id)][-1] == "succeeded"
    neuron_out = tmp_path / "neuron"
    assert main(["--server", address, "neuron", scan.id, "relu6", "0", *flags,
                 "--out", str(neuron_out), "--json"]) == 0  # fmt: skip
    capsys.readouterr()
    assert (neuron_out / "rank_1.png").read_bytes() == (out / "rank_1.png").read_bytes()


def test_cli_rejects_a_mask_quantile_outside_zero_one_as_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from maxact.client.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["topk", "m", "l", "--channel", "0", "--dataset", "d", "--mask-quantile", "1"])
    assert exited.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_streamed_images_get_the_same_rendered_patches_as_the_dataset(
    client: Client, deep: Path
) -> None:
    options = {"render": "mask", "mask_quantile": SQUARE_QUANTILE, "patch_size": 24}
    streamed = client.topk_images("deep", "relu6", 0, deep, k=2, **options).result()  # type: ignore[arg-type]
    served = _top(client, **options)
    assert [p.hit.image for p in streamed.patches] == [p.hit.image for p in served.patches]
    assert [p.patch_box for p in streamed.patches] == [p.patch_box for p in served.patches]
    assert [p.png for p in streamed.patches] == [p.png for p in served.patches]
