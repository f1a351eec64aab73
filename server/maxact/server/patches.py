"""Crop a hit's patch from the ORIGINAL image through the inverse preprocessing, as PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from .preprocess import ResolvedPreprocessing, to_rgb
from .reader import ImageSource, load_original

# Lossless either way; level 1 encodes several times faster than the default 6 for patches
# that are a few KB to a few hundred KB, which is what keeps neuron queries interactive.
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class PatchImage:
    box: tuple[int, int, int, int]  # original-image pixels, half-open, clipped
    png: bytes


def crop_patch(
    source: ImageSource, input_box: tuple[int, int, int, int], prep: ResolvedPreprocessing
) -> PatchImage:
    """Map the model-input box back into the original image and crop it there."""
    image = load_original(source)
    geometry = prep.geometry(image.height, image.width)
    y0, x0, y1, x1 = geometry.to_original(input_box)
    if y1 <= y0 or x1 <= x0:  # field lies entirely in padding added by the crop
        y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    rgb = to_rgb(image) if image.mode not in ("RGB", "L") else image
    patch = rgb.crop((x0, y0, x1, y1))
    buffer = io.BytesIO()
    patch.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return PatchImage((y0, x0, y1, x1), buffer.getvalue())


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
