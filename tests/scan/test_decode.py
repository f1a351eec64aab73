"""JPEG draft mode keeps geometry exact (the original's extent maps onto the model input), is
used only for JPEGs at least twice the resize target, and stays close to a full decode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
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


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    height=st.integers(20, 700),
    width=st.integers(20, 700),
    shorter=st.integers(8, 300),
    crop=st.integers(1, 300),
    seed=st.integers(0, 2**16),
)
def test_fast_crop_resample_is_resize_then_crop_within_one_step(
    height: int, width: int, shorter: int, crop: int, seed: int
) -> None:
    """The oracle is Pillow's resize of the whole image, then the crop (the exact path)."""
    crop = min(crop, shorter)
    request = Preprocessing(resize_shorter=shorter, center_crop=(crop, crop))
    exact = resolve(Preprocessing(), request, None, "nchw")
    fast = resolve(Preprocessing(), replace(request, fast_decode=True), None, "nchw")
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    new_h, new_w = exact.resized_size(height, width)
    top, left = exact.crop_origin(new_h, new_w)
    oracle = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    oracle = oracle.crop((left, top, left + crop, top + crop))
    got = np.asarray(fast.resize_and_crop(image), dtype=np.int16)
    assert got.shape == (crop, crop, 3)
    assert np.abs(got - np.asarray(oracle, dtype=np.int16)).max() <= 1
    assert np.array_equal(np.asarray(exact.resize_and_crop(image)), np.asarray(oracle))


def test_fast_decode_drafts_large_jpegs_and_maps_boxes_exactly(tmp_path: Path) -> None:
    path = tmp_path / "bars.jpg"
    _bars(path, 1000, 800)
    request = Preprocessing(resize_shorter=100, center_crop=(80, 80))
    exact = resolve(Preprocessing(), request, None, "nchw")
    fast = resolve(Preprocessing(), replace(request, fast_decode=True), None, "nchw")
    source = file_source(0, "bars.jpg", path)
    full, _ = prepare(source, exact, draft=False)
    quick, _ = prepare(source, fast, draft=fast.fast_decode)
    assert fast.geometry(800, 1000) == exact.geometry(800, 1000)
    assert np.abs(full - quick).mean() < 0.03
    geometry = fast.geometry(800, 1000)  # the bar's columns 500..540 in model-input pixels

    def columns(start: float, stop: float) -> set[int]:
        centre = lambda c: (c + 0.5 + geometry.offset_x) / geometry.factor_x  # noqa: E731
        return {c for c in range(80) if start <= centre(c) < stop}

    for array in (full, quick):  # bright inside the bar, dark outside it (edges may blur)
        found = set(np.flatnonzero(array[0].mean(axis=0) > 0.5))
        assert columns(504, 536) <= found <= columns(496, 544)
