"""The README's pictures, written by `make demo` (`maxact demo --docs docs`) from what the demo
just produced, so they show today's demo and cannot drift from it."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

JPEG_QUALITY = 85
# README picture -> the demo output it is made of (under the demo's output folder)
README_PICTURES = {
    "demo-montage.jpg": "montage.png",
    "report-deep-layer.jpg": "gallery.png",
    "demo-classes.jpg": "classes.png",
    "demo-recogniser.jpg": "recogniser.png",
    "ui-layer.jpg": "ui-layer.png",  # the server's web UI: a layer page
    "ui-neuron.jpg": "ui-neuron.png",  # and a neuron page
}


def write_docs_pictures(out_dir: Path, docs_dir: Path) -> tuple[list[Path], list[str]]:
    """JPEG copies (same dimensions) of the demo's montage and screenshots in `docs_dir`;
    returns (the pictures written, the sources missing, e.g. screenshots without Chromium)."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    missing: list[str] = []
    for picture, source in README_PICTURES.items():
        path = out_dir / source
        if not path.is_file():
            missing.append(source)
            continue
        with Image.open(path) as image:
            image.convert("RGB").save(docs_dir / picture, quality=JPEG_QUALITY, optimize=True)
        written.append(docs_dir / picture)
    return written, missing
