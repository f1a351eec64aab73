"""The lookup-table normalisation is bit-identical to `(pixel * scale - mean) / std` in float32,
and decoding an image without an EXIF orientation gives the same input as one with tag 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.server.data.normalise import normalise
from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.data.reader import file_source, prepare_full


def _formula(pixels: np.ndarray, scale, mean, std, order: str, layout: str) -> np.ndarray:
    """The preprocessing contract written out in float32 numpy."""
    values = pixels.astype(np.float32)
    if order == "bgr":
        values = values[:, :, ::-1]
    values = (values * np.float32(scale) - np.asarray(mean, np.float32)) / np.asarray(
        std, np.float32
    )
    if layout == "nchw":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values, dtype=np.float32)


SETTINGS = [
    (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    (1.0, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    (0.00392156862745098, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    (2.5, (0.0, -3.0, 1e-3), (1.0, -7.0, 3.0)),
]


@pytest.mark.parametrize("scale,mean,std", SETTINGS)
@pytest.mark.parametrize("order", ["rgb", "bgr"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_lookup_table_is_bit_identical_to_the_formula(scale, mean, std, order, layout) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
    pixels[0, :, :] = np.arange(23)[:, None] * 11  # covers 0 and 242
    pixels[1, :3, :] = 255
    got = normalise(pixels, scale, mean, std, order, layout)
    expected = _formula(pixels, scale, mean, std, order, layout)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_every_pixel_value_of_every_channel_matches() -> None:
    pixels = np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=-1)[None]  # [1, 256, 3]
    scale, mean, std = SETTINGS[0]
    got = normalise(pixels, scale, mean, std, "rgb", "nhwc")
    expected = _formula(pixels, scale, mean, std, "rgb", "nhwc")
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_orientation_tag_one_and_no_tag_decode_alike(tmp_path: Path) -> None:
    prep = ResolvedPreprocessing((16, 16), None, None, 1 / 255, (0, 0, 0), (1, 1, 1), "rgb", "nchw")
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    image.save(tmp_path / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 1
    image.save(tmp_path / "tagged.png", exif=exif)
    exif[0x0112] = 6  # rotate: the decode must turn it (height and width swap)
    image.save(tmp_path / "turned.png", exif=exif)
    plain, plain_size = prepare_full(file_source(0, "p", tmp_path / "plain.png"), prep)
    tagged, tagged_size = prepare_full(file_source(1, "t", tmp_path / "tagged.png"), prep)
    turned, turned_size = prepare_full(file_source(2, "r", tmp_path / "turned.png"), prep)
    np.testing.assert_array_equal(plain, tagged)
    assert plain_size == tagged_size == (40, 30) and turned_size == (30, 40)
    expected = prep.to_array(image.transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(turned, expected)
