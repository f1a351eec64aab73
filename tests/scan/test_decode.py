"""JPEG draft mode keeps geometry exact (the original's extent maps onto the model input), is
used only for JPEGs at least twice the resize target, and stays close to a full decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from maxact.server.data.decode import prepare, uses_draft
from maxact.server.data.preprocess import Preprocessing, resolve
from maxact.server.data.reader import file_source


def _bars(path: Path, width: int, height: int) -> None:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, 500:540] = 255  # vertical bar: columns 500..540 of 1000
    pixels[200:232, :] = (0, 255, 0)  # horizontal bar: rows 200..232 of 800
    Image.fromarray(pixels).save(path, quality=95)


def test_draft_decode_keeps_geometry_and_values_close(tmp_path: Path) -> None:
    path = tmp_path / "bars.jpg"
    _bars(path, 1000, 800)
    prep = resolve(Preprocessing(), Preprocessing(size=(80, 100)), None, "nchw")
    with Image.open(path) as image:
        assert uses_draft(prep, image)
    source = file_source(0, "bars.jpg", path)
    full, full_size = prepare(source, prep, draft=False)
    drafted, draft_size = prepare(source, prep, draft=True)
    assert full_size == draft_size == (800, 1000)
    assert drafted.shape == full.shape == (3, 80, 100)
    # the bars land on the same model-input rows and columns: 50..54 and 20..23
    for array in (full, drafted):
        assert set(np.flatnonzero(array[0].mean(axis=0) > 0.5)) == {50, 51, 52, 53}
        assert set(np.flatnonzero(array[1].mean(axis=1) > 0.5)) == {20, 21, 22}
    assert np.abs(full - drafted).mean() < 0.02


def test_draft_only_for_large_jpegs(tmp_path: Path) -> None:
    prep = resolve(Preprocessing(), Preprocessing(size=(224, 224)), None, "nchw")
    small, png = tmp_path / "small.jpg", tmp_path / "big.png"
    Image.new("RGB", (400, 600)).save(small)
    Image.new("RGB", (1000, 1000)).save(png)
    with Image.open(small) as image:
        assert not uses_draft(prep, image)  # 400 < 2 x 224
    with Image.open(png) as image:
        assert not uses_draft(prep, image)
    full, _ = prepare(file_source(0, "small.jpg", small), prep, draft=True)
    plain, _ = prepare(file_source(0, "small.jpg", small), prep, draft=False)
    assert np.array_equal(full, plain)
