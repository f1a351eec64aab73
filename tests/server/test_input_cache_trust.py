"""The decoded-input cache is never trusted and never fails an image, through the real server:
a cache folder that cannot be written decodes without it (one warning); a write failure skips
no image; tampered entries (symlinks to /dev/zero and to a FIFO, flipped bytes, swapped
entries, a rewritten header) give the answers of a fresh decode; an image rewritten with the
same size and mtime is decoded again."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client, Preprocessing
from maxact.server.data.input_cache import HEADER
from maxact.server.healthcheck import check
from tests.onnx_models import random_cnn, save
from tests.security.robust_helpers import unwritable_folder

SIZE = 32
PREP = Preprocessing(size=(SIZE, SIZE))
IMAGES = 8


def _bmps(folder: Path, count: int, seed: int) -> list[str]:
    """BMP files: a rewrite with other pixels of the same size keeps the file size."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        image_id = f"img_{i:02d}.bmp"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / image_id)
        ids.append(image_id)
    return ids


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*.bin") if not p.is_symlink())


@contextmanager
def _served(root: Path, cache_dir: Path) -> Iterator[tuple[Client, str]]:
    from maxact.server.app import start_server

    save(random_cnn(seed=4, size=SIZE), root / "models", "random")
    with (
        start_server(
            root / "models", root / "data", device="cpu", cache_dir=cache_dir, cache_gb=0.1
        ) as running,
        Client(running.address, timeout=60) as client,
    ):
        yield client, running.address


def _top(client: Client, dataset: str) -> dict[str, float]:
    result = client.topk(
        "random", "conv_a", 1, dataset=dataset, k=IMAGES, preprocessing=PREP
    ).result()
    assert result.images_scanned == IMAGES
    return {hit.image: hit.score for hit in result.hits}


def _scan_done(client: Client, dataset: str) -> tuple[str, int, int]:
    scan = client.scans.create("random", ["conv_a"], dataset, k=3, preprocessing=PREP)
    final = list(client.scans.watch(scan.id))[-1]
    return final.state, final.images_done, final.images_failed


def test_an_unwritable_cache_folder_decodes_without_it_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _bmps(tmp_path / "data" / "photos", IMAGES, seed=1)
    with _served(tmp_path, tmp_path / "plain") as (client, address):
        expected = _top(client, "photos")
    caplog.set_level(logging.WARNING, logger="maxact.server")
    with _served(tmp_path, unwritable_folder(tmp_path)) as (client, address):
        assert [d.name for d in client.list_datasets()] == ["photos"]
        assert _top(client, "photos") == expected
        assert _scan_done(client, "photos") == ("succeeded", IMAGES, 0)
        assert check(address, 10)
    warnings = [r for r in caplog.records if "input cache" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_a_cache_write_failure_never_skips_an_image(tmp_path: Path) -> None:
    _bmps(tmp_path / "data" / "photos", IMAGES, seed=2)
    cache_dir = tmp_path / "cache"
    with _served(tmp_path, cache_dir) as (client, _):
        expected = _top(client, "photos")
        geometry = _entries(cache_dir)[0].parent
        shutil.rmtree(geometry)
        geometry.write_bytes(b"")  # every entry's folder is now a file: writes fail
        for image in (tmp_path / "data" / "photos").iterdir():
            os.utime(image, ns=(10**9, 10**9))  # new keys: every image needs a write
        assert _scan_done(client, "photos") == ("succeeded", IMAGES, 0)
        assert _top(client, "photos") == expected


def _tamper(entries: list[Path], fifo: Path) -> None:
    entries[0].unlink()
    entries[0].symlink_to("/dev/zero")  # would read forever
    os.mkfifo(fifo)
    entries[1].unlink()
    entries[1].symlink_to(fifo)  # would block forever
    data = bytearray(entries[2].read_bytes())
    data[HEADER + 10] ^= 0xFF  # flipped pixel bytes
    entries[2].write_bytes(bytes(data))
    third, fourth = entries[3].read_bytes(), entries[4].read_bytes()
    entries[3].write_bytes(fourth)  # swapped entries: each valid, under the other's key
    entries[4].write_bytes(third)
    data = bytearray(entries[5].read_bytes())
    data[8:16] = np.asarray([1, 3 * SIZE * SIZE], dtype="<u4").tobytes()  # same total size
    entries[5].write_bytes(bytes(data))
    os.unlink(entries[6])
    os.mkfifo(entries[6])  # a FIFO in place of the entry


def test_tampered_entries_give_the_answers_of_a_fresh_decode(tmp_path: Path) -> None:
    _bmps(tmp_path / "data" / "photos", IMAGES, seed=3)
    cache_dir = tmp_path / "cache"
    with _served(tmp_path, cache_dir) as (client, address):
        expected = _top(client, "photos")
        entries = _entries(cache_dir)
        assert len(entries) == IMAGES
        _tamper(entries, tmp_path / "fifo")
        assert _top(client, "photos") == expected
        assert _scan_done(client, "photos") == ("succeeded", IMAGES, 0)
        assert check(address, 10)
        rewritten = [p for p in _entries(cache_dir) if p.is_file()]
        assert len(rewritten) == IMAGES  # every rejected entry was replaced by a good one


@pytest.mark.parametrize("how", ["in-place", "cp-p"])
def test_an_image_rewritten_with_the_same_size_and_mtime_is_decoded_again(
    tmp_path: Path, how: str
) -> None:
    ids = _bmps(tmp_path / "data" / "photos", IMAGES, seed=4)
    _bmps(tmp_path / "data" / "other", IMAGES, seed=5)  # same names, other pixels
    cache_dir = tmp_path / "cache"
    with _served(tmp_path, cache_dir) as (client, _):
        before = _top(client, "photos")
        target = tmp_path / "data" / "photos" / ids[0]
        source = tmp_path / "data" / "other" / ids[0]
        old = target.stat()
        assert source.stat().st_size == old.st_size
        if how == "in-place":
            target.write_bytes(source.read_bytes())  # same inode, new ctime
        else:
            staged = tmp_path / "staged.bmp"
            shutil.copyfile(source, staged)
            os.replace(staged, target)  # a new inode, as cp -p and rsync leave it
        os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
        now = target.stat()
        assert (now.st_size, now.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
        after = _top(client, "photos")
        fresh = _top(client, "other")
    assert after[ids[0]] == fresh[ids[0]] != before[ids[0]]
    assert {i: s for i, s in after.items() if i != ids[0]} == {
        i: s for i, s in before.items() if i != ids[0]
    }
