"""Dataset listings are walked once and reused while no folder changed, off the event loop."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from maxact.client import Client
from maxact.server.data.datasets import DatasetCatalog


def _write(path: Path, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (10, 20, 30)).save(path)


def _files_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.png"))


def test_get_dataset_sees_added_and_removed_files_in_subfolders(
    client: Client, data_root: Path
) -> None:
    root = data_root / "animals"
    for i in range(3):
        _write(root / "cats" / f"c{i}.png")
    _write(root / "dogs" / "d0.png")
    first = client.get_dataset("animals")
    assert (first.image_count, first.size_bytes) == (4, _files_bytes(root))
    _write(root / "dogs" / "d1.png", size=12)  # a new file in a subfolder
    second = client.get_dataset("animals")
    assert (second.image_count, second.size_bytes) == (5, _files_bytes(root))
    os.remove(root / "cats" / "c0.png")
    third = client.list_datasets()
    assert [(d.name, d.image_count, d.size_bytes) for d in third] == [
        ("animals", 4, _files_bytes(root))
    ]


def test_an_unchanged_dataset_is_not_walked_again(tmp_path: Path) -> None:
    """Seen from outside: a file slipped into a folder whose mtime is then set back is not
    listed (the listing was reused, not walked); a new subfolder changes the root's mtime and
    the next listing walks again and finds both."""
    root = tmp_path / "data" / "set"
    for i in range(5):
        _write(root / "a" / f"{i}.png")
    old = 1_000_000_000
    for folder in (root / "a", root):  # folders unchanged for a while: their listing is reused
        os.utime(folder, (old, old))
    catalog = DatasetCatalog(tmp_path / "data")
    first = catalog.open("set")
    assert len(first.ids) == 5
    _write(root / "a" / "hidden-from-the-signature.png")
    os.utime(root / "a", (old, old))  # the folder looks unchanged: no new walk
    assert catalog.open("set").ids == first.ids
    _write(root / "b" / "new.png")  # a new subfolder changes the root's mtime
    again = catalog.open("set").ids
    assert len(again) == 7 and "b/new.png" in again and "a/hidden-from-the-signature.png" in again
