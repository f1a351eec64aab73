"""Patches as compact files: JPEG for photo-like patches, PNG where pixels must stay exact."""

from __future__ import annotations

import io

from PIL import Image

JPEG_QUALITY = 85
SUFFIXES = {"jpeg": ".jpg", "png": ".png"}


def encode(image: Image.Image, file_format: str) -> bytes:
    buffer = io.BytesIO()
    if file_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def recode(png: bytes, file_format: str) -> bytes:
    """The server's PNG as `file_format` (PNG bytes are kept as they came)."""
    if file_format == "png":
        return png
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return encode(image, file_format)


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        decoded: Image.Image = image.copy()
        return decoded
