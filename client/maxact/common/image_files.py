"""Which files are images, and the ids and order a folder's images get: one rule for the
folders a client streams and the server's datasets."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# The image files a folder contributes (client folders and server datasets alike).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


def walk_images(
    root: Path, keep: Callable[[Path], bool] = lambda path: True
) -> list[tuple[str, Path]]:
    """(id, path) of the image files under `root`, recursively, in id (code-point) order: the
    id is the '/'-joined path relative to `root`. Hidden files and folders are skipped, symlinked
    folders are not entered, and `keep` may refuse more files."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if filename.startswith(".") or Path(filename).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(dirpath) / filename
            if keep(path):
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found, key=lambda item: item[0])
