"""Decode and preprocess one image, optionally with JPEG draft mode.

Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale, several times faster for photos much
larger than the model input. Geometry stays exact: the resize is told, through Pillow's `box`,
which region of the reduced image the ORIGINAL image spans, so the model sees the same
original-image area as a full decode (and patch boxes map back through the same inverse);
only the pixel values differ slightly (DCT-domain downscaling). Draft is used only when the
photo is at least twice the resize target on both axes.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from PIL import Image

from maxact.server.data.preprocess import ResolvedPreprocessing, into, to_rgb
from maxact.server.data.reader import Finish, ImageSource, check_pixels, decode_pixels, oriented

DRAFT_FACTOR = 2


def uses_draft(prep: ResolvedPreprocessing, image: Image.Image) -> bool:
    """The rule: a JPEG at least DRAFT_FACTOR times the resize target on both axes."""
    if image.format != "JPEG" or prep.size_multiple is not None:
        # size_multiple: re-deriving the size from the drafted image may round differently
        return False
    width, height = _upright_size(image)
    target_h, target_w = prep.resized_size(height, width)
    return width >= DRAFT_FACTOR * target_w and height >= DRAFT_FACTOR * target_h


def _upright_size(image: Image.Image) -> tuple[int, int]:
    orientation = image.getexif().get(0x0112, 1)
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def prepare(
    source: ImageSource,
    prep: ResolvedPreprocessing,
    draft: bool = True,
    normalised: bool = True,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """(model input array, original (height, width)); draft mode only where `uses_draft`;
    `normalised=False`: the uint8 pixels (for a graph that normalises them itself); `out`:
    the image's slot in a batch, written instead of a new array (and returned).

    A file source with a dataset in the decoded-input cache reads its pixels from there when
    the file is unchanged, and stores them after decoding otherwise."""
    if source.cache is not None and source.path is not None and prep.pixels_exact:
        pixels, size = source.cache.decoded(
            source.image_id, source.path, prep, draft, lambda: decode(source, prep, draft)
        )
        if normalised:
            return prep.normalise(pixels, out), size
        return into(out, pixels), size
    if normalised:
        return decode(source, prep, draft, partial(prep.to_array, out=out))
    array, size = decode(source, prep, draft, prep.to_pixels)
    return into(out, array), size


def decode(
    source: ImageSource,
    prep: ResolvedPreprocessing,
    draft: bool = True,
    finish: Finish | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """(`finish(image)`, original (height, width)); `finish` default: `prep.to_pixels`, the
    uint8 pixels after the geometry (what the decoded-input cache stores)."""
    finish = finish or prep.to_pixels
    if not draft:
        return decode_pixels(source, prep, finish)
    with source.open() as opened:
        check_pixels(opened)
        if not uses_draft(prep, opened):
            image = oriented(opened)
            return finish(image), (image.height, image.width)
        width, height = _upright_size(opened)
        target_h, target_w = prep.resized_size(height, width)
        request = (target_w, target_h) if (width, height) == opened.size else (target_h, target_w)
        drafted = opened.draft("RGB", request)
        image = oriented(opened)
        scale = opened.decoderconfig[0] if drafted is not None and opened.decoderconfig else 1
        box = (0.0, 0.0, width / scale, height / scale)  # the original's extent, reduced
        resized = to_rgb(image).resize((target_w, target_h), Image.Resampling.BILINEAR, box=box)
        return finish(resized), (height, width)
