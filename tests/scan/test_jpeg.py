"""JPEGs decoded by simplejpeg give exactly the model input Pillow's decoder gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.server.data import jpeg
from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.data.reader import ImageSource, decode_pixels, file_source

PREP = ResolvedPreprocessing(None, 48, (40, 40), 1 / 255, (0, 0, 0), (1, 1, 1), "rgb", "nchw")


def _photo(path: Path, mode: str, orientation: int = 1, **save: object) -> None:
    rng = np.random.default_rng(len(path.name))
    coarse = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((101, 77), Image.Resampling.BICUBIC).convert(mode)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(path, format="JPEG", exif=exif, **save)


CASES = {
    "rgb 4:2:0": ("RGB", 1, {"quality": 85}),
    "rgb 4:4:4": ("RGB", 1, {"quality": 95, "subsampling": 0}),
    "progressive": ("RGB", 1, {"quality": 80, "progressive": True}),
    "grayscale": ("L", 1, {"quality": 90}),
    "rotated exif 6": ("RGB", 6, {"quality": 90}),
    "mirrored exif 2": ("RGB", 2, {"quality": 90}),
}


@pytest.mark.skipif(not jpeg.available(), reason="simplejpeg not installed")
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_simplejpeg_decode_equals_pillow(tmp_path: Path, case) -> None:
    mode, orientation, save = case
    path = tmp_path / "photo.jpg"
    _photo(path, mode, orientation, **save)
    with Image.open(path) as opened:
        assert jpeg.fast_decodable(opened, path)
    fast = decode_pixels(file_source(0, "photo.jpg", path), PREP)
    pillow = decode_pixels(ImageSource(0, "photo.jpg", lambda: Image.open(path)), PREP)
    np.testing.assert_array_equal(fast[0], pillow[0])
    assert fast[1] == pillow[1] == ((101, 77) if orientation in (5, 6, 7, 8) else (77, 101))
