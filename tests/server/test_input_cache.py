"""The decoded-input cache: cached inputs equal a fresh decode, a changed file is decoded again,
and the size bound is kept by evicting least recently used datasets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client, Preprocessing
from maxact.server.data.decode import prepare
from maxact.server.data.input_cache import HEADER, InputCache
from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.data.reader import file_source
from tests.onnx_models import random_cnn, save

SIZE = 32


def _photos(folder: Path, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(count):
        h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        image_id = f"img_{i:03d}.jpg" if i % 2 else f"img_{i:03d}.png"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / image_id)
        ids.append(image_id)
    return sorted(ids)


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("*.bin"))


PREP = ResolvedPreprocessing(
    None, 40, (SIZE, SIZE), 1 / 255, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), "bgr", "nchw"
)


@pytest.mark.parametrize("draft", [False, True])
def test_cached_inputs_equal_a_fresh_decode(tmp_path: Path, draft: bool) -> None:
    ids = _photos(tmp_path / "set", 6, seed=1)
    cache = InputCache(tmp_path / "cache", 10**8).dataset("set")
    for i, image_id in enumerate(ids):
        path = tmp_path / "set" / image_id
        fresh = prepare(file_source(i, image_id, path), PREP, draft)
        first = prepare(file_source(i, image_id, path, cache), PREP, draft)  # decodes, stores
        second = prepare(file_source(i, image_id, path, cache), PREP, draft)  # reads the cache
        for got in (first, second):
            np.testing.assert_array_equal(got[0], fresh[0])
            assert got[1] == fresh[1]
    assert len(_entries(tmp_path / "cache")) == len(ids)


def test_a_changed_file_is_decoded_again(tmp_path: Path) -> None:
    ids = _photos(tmp_path / "set", 2, seed=2)
    path = tmp_path / "set" / ids[0]
    cache = InputCache(tmp_path / "cache", 10**8).dataset("set")
    before = prepare(file_source(0, ids[0], path, cache), PREP, False)
    Image.new("RGB", (50, 70), (200, 10, 30)).save(path, format="PNG")  # same name, new pixels
    after = prepare(file_source(0, ids[0], path, cache), PREP, False)
    fresh = prepare(file_source(0, ids[0], path), PREP, False)
    np.testing.assert_array_equal(after[0], fresh[0])
    assert after[1] == (70, 50) and not np.array_equal(after[0], before[0])


def test_the_size_bound_is_kept_least_recently_used_dataset_first(tmp_path: Path) -> None:
    entry = HEADER + SIZE * SIZE * 3
    cache = InputCache(tmp_path / "cache", 10 * entry)
    for name in ("a", "b", "c"):
        ids = _photos(tmp_path / name, 4, seed=ord(name))
        part = cache.dataset(name)
        for i, image_id in enumerate(ids):
            prepare(file_source(i, image_id, tmp_path / name / image_id, part), PREP, False)
        on_disk = sum(p.stat().st_size for p in _entries(tmp_path / "cache"))
        assert on_disk == cache.total_bytes <= 10 * entry
    # a and b fit (8 entries); c's first entries evict a (least recently used), keep b
    folders = {p.parent.parent.name.split("-")[0] for p in _entries(tmp_path / "cache")}
    assert folders == {"b", "c"}
    big = _photos(tmp_path / "big", 12, seed=9)  # alone more than the bound: writing stops
    part = cache.dataset("big")
    for i, image_id in enumerate(big):
        got = prepare(file_source(i, image_id, tmp_path / "big" / image_id, part), PREP, False)
        np.testing.assert_array_equal(
            got[0], prepare(file_source(i, image_id, tmp_path / "big" / image_id), PREP, False)[0]
        )
    assert cache.total_bytes <= 10 * entry
    assert sum(p.stat().st_size for p in _entries(tmp_path / "cache")) == cache.total_bytes


@contextmanager
def _served_with_cache(root: Path) -> Iterator[Client]:
    """A server on `root`/models and `root`/data with its input cache in `root`/cache."""
    from maxact.server.app import start_server

    save(random_cnn(seed=4, size=SIZE), root / "models", "random")
    with (
        start_server(
            root / "models",
            root / "data",
            device="cpu",
            cache_dir=root / "cache",
            cache_gb=0.1,
        ) as running,
        Client(running.address, timeout=120) as client,
    ):
        yield client


def test_second_topk_reads_the_cache_and_sees_a_changed_file(tmp_path: Path) -> None:
    ids = _photos(tmp_path / "data" / "photos", 12, seed=3)
    cache_dir = tmp_path / "cache"
    prep = Preprocessing(size=(SIZE, SIZE))
    with _served_with_cache(tmp_path) as client:

        def top() -> list[tuple[str, float]]:
            result = client.topk(
                "random", "conv_a", 1, dataset="photos", k=12, preprocessing=prep
            ).result()
            return [(h.image, h.score) for h in result.hits]

        first = top()
        entries = _entries(cache_dir)
        assert len(entries) == len(ids)
        stamps = [p.stat().st_mtime_ns for p in entries]
        assert top() == first  # from the cache: same hits, no entry rewritten
        assert [p.stat().st_mtime_ns for p in _entries(cache_dir)] == stamps
        target = tmp_path / "data" / "photos" / ids[0]
        Image.new("RGB", (40, 40), (255, 255, 255)).save(target, format="PNG")
        os.utime(target, ns=(1, 1))  # a different mtime and size: decoded again
        third = top()
        assert len(_entries(cache_dir)) == len(ids) + 1
        assert dict(third)[ids[0]] != dict(first)[ids[0]]


def test_fast_decode_through_the_server_keeps_boxes_and_its_own_cache_entries(
    tmp_path: Path,
) -> None:
    ids = _photos(tmp_path / "data" / "photos", 12, seed=5)
    cache_dir = tmp_path / "cache"
    exact = Preprocessing(resize_shorter=40, center_crop=(SIZE, SIZE))
    fast = Preprocessing(resize_shorter=40, center_crop=(SIZE, SIZE), fast_decode=True)
    with _served_with_cache(tmp_path) as client:
        results = {
            name: client.topk(
                "random", "conv_a", 2, dataset="photos", k=12, preprocessing=prep
            ).result()
            for name, prep in (("exact", exact), ("fast", fast))
        }
    assert results["fast"].preprocessing is not None
    assert results["fast"].preprocessing.fast_decode is True
    assert results["exact"].preprocessing is not None
    assert not results["exact"].preprocessing.fast_decode
    assert len(_entries(cache_dir)) == 2 * len(ids)  # fast pixels never served as exact ones
    by_unit = {(h.image, h.unit): h for h in results["exact"].hits}
    shared = [h for h in results["fast"].hits if (h.image, h.unit) in by_unit]
    assert len(shared) >= 6  # the same units mostly win
    for hit in shared:  # same geometry: the same boxes; values close to the exact decode
        twin = by_unit[(hit.image, hit.unit)]
        assert (hit.box, hit.input_box) == (twin.box, twin.input_box)
        assert hit.score == pytest.approx(twin.score, abs=0.05 * max(1.0, abs(twin.score)))
