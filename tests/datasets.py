"""Image folders for server tests: datasets of noise or flat images, and a scan slow enough to
watch, cancel or kill midway."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.onnx_models import heavy_cnn, save


def write_images(
    folder: Path, count: int, size: int, seed: int | None = None, classes: tuple[str, ...] = ()
) -> None:
    """`count` size x size PNGs named img_0000.png, ... in `folder` (made if missing): uniform
    RGB noise from `seed`, or flat grey (100) when seed is None. With `classes`, image i goes
    into the class folder classes[i % len(classes)]."""
    rng = np.random.default_rng(seed)
    flat = np.full((size, size, 3), 100, dtype=np.uint8)
    for i in range(count):
        pixels = flat if seed is None else rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = folder / (classes[i % len(classes)] if classes else "") / f"img_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


def slow_scan(
    model_root: Path, data_root: Path, count: int, seed: int | None = None, dataset: str = "many"
) -> None:
    """Model `heavy` (heavy_cnn at 128) and `count` 128x128 images in dataset `dataset`: a scan of
    relu5 takes seconds, so a test can act while it runs."""
    save(heavy_cnn(128), model_root, "heavy")
    write_images(data_root / dataset, count, 128, seed)


def tinted_images(
    root: Path, classes: tuple[str, ...], count: int = 30, size: int = 32, seed: int = 11
) -> None:
    """Class folders of noisy images tinted by their class (the class's index picks the colour
    channel) with a bright square each, so channels differ in class selectivity."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        label = classes[i % len(classes)]
        pixels = rng.integers(0, 90, size=(size, size, 3))
        channel = classes.index(label) % 3
        y, x = rng.integers(0, size - 8, size=2)
        pixels[y : y + 8, x : x + 8, channel] = 255
        pixels[..., channel] += 60
        path = root / label / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
