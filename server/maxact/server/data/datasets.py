"""Image folders under the data root: stable ids, labels, and safe listing.

A folder holds loose image files, or shard files (`.tar` / `.parquet`, see `shards`); the
functions here hide which, so every reader of a dataset takes the same path.
"""

from __future__ import annotations

import contextlib
import csv
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from maxact.client.images import walk_images
from maxact.server.data.input_cache import DatasetInputCache, InputCache
from maxact.server.data.reader import ImageSource, file_source
from maxact.server.data.shards import (
    ShardError,
    is_sharded,
    list_sharded,
    shard_files,
    shard_of,
    shard_source,
    stream_shard_sources,
)
from maxact.server.errors import failed_precondition, invalid_argument, not_found, shown
from maxact.server.paths import check_name, is_inside, resolve_under


@dataclass(frozen=True)
class Dataset:
    """A listed dataset: ids in code-point order (the dataset order), paths and labels."""

    name: str
    root: Path
    ids: tuple[str, ...]
    labels: dict[str, str]
    size_bytes: int = 0  # of the listed image files, when listed
    input_cache: DatasetInputCache | None = None  # its decoded inputs, when the server caches

    def path_of(self, image_id: str) -> Path:
        return self.root / image_id

    def source(self, index: int, image_id: str) -> ImageSource:
        return image_source(self.root, index, image_id)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.values()))


def list_image_ids(root: Path) -> list[str]:
    """Image files under `root`, recursively, as '/'-joined relative paths in code-point order.

    Symlinks that lead outside the root are ignored so a dataset can never expose other files.
    """

    return _walk(root).ids


RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class _Listing:
    ids: list[str]
    folders: list[str]  # every folder under the root (root first): what the signature stats
    size_bytes: int


def _walk(root: Path) -> _Listing:
    def stays_inside(path: Path) -> bool:
        return not path.is_symlink() or is_inside(root, path)

    found = walk_images(root, stays_inside)
    size = 0
    for _, path in found:
        with contextlib.suppress(OSError):  # vanished or a dangling link: size unknown
            size += path.stat().st_size
    folders = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=False):  # names only: no stat calls
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        folders.append(dirpath)
    return _Listing([image_id for image_id, _ in found], folders, size)


def _signature(root: Path, folders: list[str]) -> tuple[int, ...]:
    """The folders' mtimes (and labels.csv's): adding, removing or renaming a file changes its
    folder's mtime, so an unchanged signature means an unchanged listing, at one stat per
    folder instead of one per image."""
    stamps = []
    for folder in [*folders, str(root / "labels.csv")]:
        try:
            stamps.append(os.stat(folder).st_mtime_ns)
        except OSError:
            stamps.append(-1)
    return tuple(stamps)


def image_source(root: Path, index: int, image_id: str) -> ImageSource:
    """One image of the dataset at `root`, read on demand (a loose file or a shard sample)."""
    if shard_of(root, image_id) is not None:
        return shard_source(root, index, image_id)
    return file_source(index, image_id, root / image_id)


def dataset_sources(
    root: Path,
    ids: Sequence[str],
    indices: Sequence[int],
    cache: DatasetInputCache | None = None,
) -> Iterable[ImageSource]:
    """Sources of `ids` (at dataset `indices`) for a scan: a list of files, or a stream that
    reads each shard once front to back; either read through the decoded-input cache when
    the server keeps one."""
    if ids and shard_of(root, ids[0]) is not None:
        return stream_shard_sources(root, ids, indices, cache)
    return [
        file_source(i, image_id, root / image_id, cache)
        for i, image_id in zip(indices, ids, strict=True)
    ]


def _listed_shards(root: Path) -> tuple[list[str], dict[str, str]]:
    try:
        return list_sharded(root)
    except ShardError as exc:
        raise failed_precondition("DATASET_UNREADABLE", str(exc), dataset=root.name) from None


def read_labels(root: Path, ids: list[str]) -> dict[str, str]:
    """labels.csv (path,label) at the root wins; else class folders (first-level subfolder);
    a sharded dataset's labels are its samples' labels (`.cls` members, a label column)."""
    if is_sharded(root):
        return _listed_shards(root)[1]
    labels_file = root / "labels.csv"
    if labels_file.is_file():
        labels: dict[str, str] = {}
        with labels_file.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                if len(row) < 2 or row[0].strip() in ("", "path"):
                    continue
                labels[row[0].strip()] = row[1].strip()
        return labels
    if ids and all("/" in image_id for image_id in ids):
        return {image_id: image_id.split("/", 1)[0] for image_id in ids}
    return {}


class DatasetCatalog:
    """Datasets under one data root, listed on demand (folders can change while serving)."""

    def __init__(self, data_root: Path | None, input_cache: InputCache | None = None) -> None:
        self.data_root = data_root
        self.input_cache = input_cache
        # name -> (folder signature, listing): a listing is walked once and reused while no
        # folder of the dataset changed (20k images: ~150 ms of stat() calls per walk)
        self._listings: dict[str, tuple[tuple[int, ...], _Listing]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if self.data_root is None or not self.data_root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.data_root.iterdir()
            if entry.is_dir()
            and not entry.name.startswith(".")
            and is_inside(self.data_root, entry)
        )

    def open(self, name: str) -> Dataset:
        """The dataset listed now: ids, labels (walks the whole folder)."""
        root = self.root_of(name)
        if is_sharded(root):
            shard_ids, labels = _listed_shards(root)
            size = sum(path.stat().st_size for path in shard_files(root))
            return Dataset(
                name=name, root=root, ids=tuple(shard_ids), labels=labels, size_bytes=size
            )
        listing = self._listing(name, root)
        ids = listing.ids
        return Dataset(
            name=name,
            root=root,
            ids=tuple(ids),
            labels=read_labels(root, ids),
            size_bytes=listing.size_bytes,
            input_cache=self.input_cache_for(name),
        )

    def input_cache_for(self, name: str) -> DatasetInputCache | None:
        """The dataset's part of the decoded-input cache (None: the server does not cache)."""
        return None if self.input_cache is None else self.input_cache.dataset(name)

    def _listing(self, name: str, root: Path) -> _Listing:
        with self._lock:
            cached = self._listings.get(name)
        if cached is not None and _signature(root, cached[1].folders) == cached[0]:
            return cached[1]
        started = time.time_ns()
        listing = _walk(root)
        signature = _signature(root, listing.folders)
        # Folder mtimes have a coarse clock (a few ms): a folder touched within the last
        # RACY_NS may still change without its mtime moving, so such a listing is not reused.
        if max(signature) < started - RACY_NS:
            with self._lock:
                self._listings[name] = (signature, listing)
        return listing

    def root_of(self, name: str) -> Path:
        """The dataset's folder, checked, without listing its images."""
        if self.data_root is None:
            raise not_found(
                "DATASET_NOT_FOUND",
                f"dataset {name!r} not found: the server was started without --data-root",
                dataset=name,
            )
        check_name(name, "dataset")
        if "/" in name:
            raise invalid_argument(
                "INVALID_NAME", f"invalid dataset name {shown(name)}: a dataset is a folder name"
            )
        root = resolve_under(self.data_root, name, "dataset")
        if not root.is_dir():
            raise not_found(
                "DATASET_NOT_FOUND",
                f"dataset {name!r} not found under the data root; known: {self.names()}",
                dataset=name,
            )
        return root
