"""Montages: one tile per patch, crisp upscaling, aspect kept, captions under the tiles."""

from __future__ import annotations

import numpy as np
from PIL import Image

from maxact.client import montage
from maxact.client.montage import caption, fit_tile, render_montage, stack_rows


def _checker(size: int) -> Image.Image:
    """A 2-colour checkerboard: upscaling must not invent colours in between."""
    arr = (np.indices((size, size)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([arr, arr * 0, 255 - arr], axis=-1))


def test_width_grows_by_one_tile_per_patch() -> None:
    patch = Image.new("RGB", (5, 5), (255, 0, 0))
    one = render_montage([(patch, "#1  1")], tile=64)
    three = render_montage([(patch, "#1  1")] * 3, tile=64)
    assert three.width - one.width == 2 * (64 + montage.GAP)
    assert one.height == three.height > 64


def test_small_patches_are_upscaled_with_nearest_neighbour() -> None:
    fitted = fit_tile(_checker(4), 64)
    assert fitted.size == (64, 64)
    colours = {tuple(c) for c in np.asarray(fitted).reshape(-1, 3)}
    assert colours == {(0, 0, 255), (255, 0, 0)}


def test_fit_keeps_aspect_ratio() -> None:
    assert fit_tile(Image.new("RGB", (300, 100)), 150).size == (150, 50)
    assert fit_tile(Image.new("RGB", (10, 40)), 160).size == (40, 160)


def test_grayscale_and_rgba_patches_become_rgb() -> None:
    assert fit_tile(Image.new("L", (8, 8), 128), 16).mode == "RGB"
    assert fit_tile(Image.new("RGBA", (8, 8)), 16).mode == "RGB"


def test_background_is_white_and_patch_sits_in_its_tile() -> None:
    image = render_montage([(Image.new("RGB", (10, 10), (255, 0, 0)), "#1  2")], tile=40)
    arr = np.asarray(image)
    assert tuple(arr[0, 0]) == (255, 255, 255)
    m = montage.MARGIN
    assert tuple(arr[m + 20, m + 20]) == (255, 0, 0)


def test_caption_is_drawn_below_the_tile() -> None:
    tile = 40
    blank = render_montage([(Image.new("RGB", (4, 4), (255, 255, 255)), "")], tile=tile)
    text = render_montage([(Image.new("RGB", (4, 4), (255, 255, 255)), "#1  12.34")], tile=tile)
    below = slice(montage.MARGIN + tile, None)
    assert (np.asarray(blank)[below] == 255).all()
    assert (np.asarray(text)[below] < 128).any()


def test_caption_shows_rank_and_score() -> None:
    assert caption(1, 12.34) == "#1  12.34"
    assert caption(3, -0.5) == "#3  -0.5"


def test_stack_rows_puts_titled_rows_under_each_other() -> None:
    row = render_montage([(Image.new("RGB", (4, 4), (0, 0, 0)), "#1  1")], tile=32)
    stacked = stack_rows([("layer / channel 0", row), ("layer / channel 1", row)])
    assert stacked.width >= row.width
    assert stacked.height > 2 * row.height
