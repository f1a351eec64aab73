"""The README's pictures come from `make demo` (`maxact demo --docs docs`): the files the README
shows are the ones the demo writes, with the dimensions the demo gives them today (not their
pixels, which depend on the photos' scores); and the demo's photo set holds photos only."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from maxact.client import types as t
from maxact.client.demo.docs_pictures import README_PICTURES, write_docs_pictures
from maxact.client.demo.ocr_demo import CTC_LAYER, MONTAGE, ROWS
from maxact.client.demo.run import (
    CHANNELS,
    CLASSES_PNG,
    CLASSES_WINDOW,
    DEMO_K,
    GALLERY_PNG,
    MONTAGE_TILE,
    SCREENSHOT_WINDOW,
)
from maxact.client.demo.web_ui import UI_LAYER_PNG, UI_NEURON_PNG, UI_WINDOW
from maxact.client.montage import stack_rows
from maxact.client.patches_out import montage_of

REPO = Path(__file__).resolve().parents[2]
DEMO_LAYERS = ("p2o.pd_op.hardswish.9.0", "p2o.pd_op.hardswish.13.0")  # early and mid


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def _placeholder_row(k: int) -> Image.Image:
    """A montage row as the demo draws it: k patches captioned '#rank  score' + image name."""
    patches = tuple(
        t.Patch(t.Hit(i + 1, f"photo-{i}.jpg", 1.5 - i / 10, (0, 0), (0, 0, 9, 9), (0, 0, 9, 9), 0),
                _png((40, 40)))
        for i in range(k)
    )  # fmt: skip
    result = t.TopKResult(
        model="m", layer="l", channel=0, k=k, mode="image", bottom=False, images_scanned=36,
        images_failed=0, patches=patches,
    )  # fmt: skip
    return montage_of(result, tile=MONTAGE_TILE)


def test_the_readme_and_docs_show_exactly_the_pictures_the_demo_writes() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"!\[[^\]]*\]\(docs/([^)]+)\)", readme))
    for page in sorted((REPO / "docs").glob("*.md")):  # pages in docs/ name them relatively
        shown |= set(re.findall(r"!\[[^\]]*\]\(([^)/]+)\)", page.read_text(encoding="utf-8")))
    assert shown == set(README_PICTURES)
    assert all((REPO / "docs" / name).is_file() for name in README_PICTURES)
    assert set(README_PICTURES.values()) == {
        "montage.png",
        GALLERY_PNG,
        CLASSES_PNG,
        MONTAGE,
        UI_LAYER_PNG,
        UI_NEURON_PNG,
    }


def test_readme_pictures_have_the_dimensions_the_demo_gives_them() -> None:
    rows = [
        (f"{layer} / channel {channel}", _placeholder_row(DEMO_K))
        for layer in DEMO_LAYERS
        for channel in CHANNELS
    ]
    recogniser_rows = [(f"{CTC_LAYER} / channel {c}", _placeholder_row(DEMO_K)) for c in ROWS]
    expected = {
        "demo-montage.jpg": stack_rows(rows).size,
        "demo-recogniser.jpg": stack_rows(recogniser_rows).size,
        "report-deep-layer.jpg": SCREENSHOT_WINDOW,
        "demo-classes.jpg": CLASSES_WINDOW,
        "ui-layer.jpg": UI_WINDOW,
        "ui-neuron.jpg": UI_WINDOW,
    }
    for name, size in expected.items():
        with Image.open(REPO / "docs" / name) as picture:
            assert picture.size == tuple(size), f"docs/{name}: run `make demo` to refresh it"


def test_docs_pictures_are_jpeg_copies_at_the_same_size_and_missing_ones_are_named(
    tmp_path: Path,
) -> None:
    out = tmp_path / "demo-out"
    out.mkdir()
    Image.new("RGB", (300, 120), (1, 2, 3)).save(out / "montage.png")
    Image.new("RGBA", (200, 150), (9, 9, 9, 255)).save(out / GALLERY_PNG)
    written, missing = write_docs_pictures(out, tmp_path / "docs")
    # e.g. no Chromium (no screenshots were taken), no recogniser montage
    assert missing == [CLASSES_PNG, MONTAGE, UI_LAYER_PNG, UI_NEURON_PNG]
    sizes = {}
    for path in written:
        with Image.open(path) as picture:
            assert picture.format == "JPEG"
            sizes[path.name] = picture.size
    assert sizes == {"demo-montage.jpg": (300, 120), "report-deep-layer.jpg": (200, 150)}


def test_the_demo_photo_set_holds_no_drawings_and_drops_old_ones(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    from maxact.client.demo.classes_demo import CONTENT, write_photo_labels
    from maxact.client.demo.fetch import NOT_PHOTOS, write_demo_photos

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "horse.png").write_bytes(_png((8, 8)))  # left by an older demo
    photos = write_demo_photos(folder)
    stems = {path.stem.split("-")[0] for path in folder.iterdir() if path.suffix != ".csv"}
    assert stems and not stems & set(NOT_PHOTOS)
    assert not set(CONTENT) & set(NOT_PHOTOS)
    labels = write_photo_labels(photos).read_text(encoding="utf-8")
    assert not any(name in labels for name in NOT_PHOTOS)
