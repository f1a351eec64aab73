"""Text-line crops for the text recogniser, cut from scikit-image's `page` and `text` photos.

A recogniser reads one line at a time (PP-OCR: 48 pixels high, at most 320 wide), so the
lines of the scanned page are found from its row profile of dark pixels and cut into pieces
no wider than the recogniser's aspect ratio; the `text` photo (handwriting on a slanted
sheet) is cut into overlapping bands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from maxact.client.demo.fetch import DemoSetupError

ASPECT = 320 / 48  # the widest crop that fits the recogniser's 48 x 320 input unshrunk
MIN_LINE = 8  # rows: thinner dark runs are rules or noise, not text lines


def _line_rows(gray: np.ndarray, dark: int = 100, share: float = 0.1) -> list[tuple[int, int]]:
    """Half-open row ranges where more than `share` of the pixels are darker than `dark`."""
    ink = (gray < dark).mean(axis=1) > share
    lines, start = [], None
    for row, inked in enumerate([*ink.tolist(), False]):
        if inked and start is None:
            start = row
        elif not inked and start is not None:
            if row - start >= MIN_LINE:
                lines.append((start, row))
            start = None
    return lines


def _pieces(width: int, height: int) -> list[tuple[int, int]]:
    """Column ranges of at most ASPECT * height, overlapping by a quarter, covering `width`."""
    span = min(width, int(ASPECT * height))
    step = max(1, span * 3 // 4)
    starts = list(range(0, max(width - span, 0) + 1, step))
    if starts[-1] + span < width:
        starts.append(width - span)
    return [(s, s + span) for s in starts]


def page_crops(gray: np.ndarray, margin: int = 3) -> list[Image.Image]:
    """Crops of the page's text lines (a margin of rows kept above and below)."""
    crops = []
    for top, bottom in _line_rows(gray):
        y0, y1 = max(0, top - margin), min(gray.shape[0], bottom + margin)
        for x0, x1 in _pieces(gray.shape[1], y1 - y0):
            crops.append(Image.fromarray(gray[y0:y1, x0:x1]))
    return crops


def band_crops(gray: np.ndarray, height: int = 48) -> list[Image.Image]:
    """Overlapping bands `height` rows high of a photo of text, cut into pieces."""
    crops = []
    for y0 in range(0, gray.shape[0] - height + 1, height // 2):
        for x0, x1 in _pieces(gray.shape[1], height):
            crops.append(Image.fromarray(gray[y0 : y0 + height, x0:x1]))
    return crops


def write_text_crops(dest_dir: Path) -> list[Path]:
    """Write the crops as PNGs (`page-NN.png`, `text-NN.png`) into `dest_dir`; existing files
    are kept. Returns the paths, sorted."""
    try:
        from skimage import data as skdata
    except ImportError as error:
        raise DemoSetupError(
            f"the text crops need scikit-image ({error}); pip install 'maxact[demo]'"
        ) from error
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cut in (("page", page_crops), ("text", band_crops)):
        crops = cut(np.asarray(getattr(skdata, name)()))
        for k, crop in enumerate(crops):
            path = dest_dir / f"{name}-{k:02d}.png"
            if not path.exists():
                crop.convert("RGB").save(path)
            written.append(path)
    return sorted(written)
