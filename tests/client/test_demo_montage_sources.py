"""Demo montages name each patch's image, and copies of one photo do not fill a top-k."""

from __future__ import annotations

import io

from PIL import Image

from maxact.client import types as t
from maxact.client.demo.run import distinct_sources, source_photo
from maxact.client.montage import image_caption, render_montage
from maxact.client.patches_out import montage_of


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _result(images: list[str]) -> t.TopKResult:
    patches = tuple(
        t.Patch(t.Hit(i + 1, name, 10.0 - i, (0, 0), (0, 0, 8, 8), (0, 0, 8, 8), 0), _png())
        for i, name in enumerate(images)
    )
    return t.TopKResult(
        model="m", layer="l", channel=0, k=len(patches), mode="image", bottom=False,
        images_scanned=9, images_failed=0, patches=patches,
    )  # fmt: skip


def test_variants_of_one_photo_share_its_source() -> None:
    assert source_photo("astronaut-mirrored.jpg") == source_photo("astronaut.jpg") == "astronaut"
    assert source_photo("coffee.jpg") != source_photo("chelsea-cropped.jpg")


def test_distinct_sources_keeps_the_best_hit_per_photo_reranked() -> None:
    names = ["coffee.jpg", "coffee-mirrored.jpg", "chelsea.jpg", "coffee-rotated.jpg", "rocket.jpg"]
    kept = distinct_sources(_result(names), k=3)
    assert [p.hit.image for p in kept.patches] == ["coffee.jpg", "chelsea.jpg", "rocket.jpg"]
    assert [p.hit.rank for p in kept.patches] == [1, 2, 3] and kept.k == 3
    assert [p.hit.score for p in kept.patches] == [10.0, 8.0, 6.0]


def test_montage_caption_names_the_image_under_rank_and_score() -> None:
    assert image_caption(2, 1.5, "coffee.jpg", 128) == "#2  1.5\ncoffee.jpg"
    long = image_caption(1, 1.0, "a" * 50 + "-end.jpg", 64)
    assert long.splitlines()[1].endswith("-end.jpg") and long.splitlines()[1].startswith("…")
    with_names = montage_of(_result(["coffee.jpg"]), tile=64)
    rank_only = render_montage([(Image.new("RGB", (8, 8)), "#1  10")], tile=64)
    assert with_names.width == rank_only.width and with_names.height > rank_only.height
    # the second line has ink: the image's name
    below = with_names.crop((0, rank_only.height - 4, with_names.width, with_names.height))
    assert below.convert("L").getextrema()[0] < 128
