"""Image folders under the data root: stable ids, labels, and safe listing.

A folder holds loose image files, or shard files (`.tar` / `.parquet`, see `shards`); the
functions here hide which, so every reader of a dataset takes the same path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from maxact.common.image_files import walk_images
from maxact.server.data.input_cache import DatasetInputCache, InputCache
from maxact.server.data.labels import LABELS_FILE, LabelError, read_labels_csv
from maxact.server.data.reader import ImageSource, failing_source, file_source
from maxact.server.data.shards import (
    ShardError,
    is_sharded,
    list_sharded,
    shard_files,
    shard_of,
    shard_source,
    stream_shard_sources,
)
from maxact.server.errors import (
    ServiceError,
    failed_precondition,
    invalid_argument,
    not_found,
    shown,
)
from maxact.server.paths import check_name, is_inside, name_problem, resolve_under

log = logging.getLogger(__name__)
UNREADABLE = "DATASET_UNREADABLE"


@dataclass(frozen=True)
class Dataset:
    """A listed dataset: ids in code-point order (the dataset order), paths and labels."""

    name: str
    root: Path
    ids: tuple[str, ...]
    labels: dict[str, str]
    size_bytes: int = 0  # of the listed image files, when listed
    input_cache: DatasetInputCache | None = None  # its decoded inputs, when the server caches
    unreadable: str = ""  # why the dataset cannot be read (it then lists no images)

    def path_of(self, image_id: str) -> Path:
        return self.root / image_id

    def source(self, index: int, image_id: str) -> ImageSource:
        return image_source(self.root, index, image_id)

    @property
    def classes(self) -> list[str]:
        """The labels of its images (labels are kept only for listed, readable ids)."""
        return sorted(set(self.labels.values()))

    @property
    def readable_count(self) -> int:
        """Images a scan can read: ids with an unsafe name are listed (and skipped) only."""
        return sum(1 for image_id in self.ids if name_problem(image_id) is None)


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


class UnsafeImageId(ValueError):
    """An id read from disk (a file or folder name, a tar member, a Parquet key) that is not a
    safe relative name: the image is skipped, never opened."""


def id_error(image_id: str) -> UnsafeImageId | None:
    """THE check of an image id where a dataset is read (listing, top-k, scans, crops): ids come
    from names on disk, which may hold newlines, '..', absolute paths or control characters."""
    problem = name_problem(image_id)
    if problem is None:
        return None
    return UnsafeImageId(f"unsafe image id {shown(image_id)}: {problem}")


def image_source(root: Path, index: int, image_id: str) -> ImageSource:
    """One image of the dataset at `root`, read on demand (a loose file or a shard sample)."""
    error = id_error(image_id)
    if error is not None:
        return failing_source(index, image_id, error)
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
    the server keeps one. An unsafe id comes out as a source that fails with its reason."""
    if is_sharded(root):
        return _shard_sources(root, ids, indices, cache)
    return [
        file_source(i, image_id, root / image_id, cache)
        if (error := id_error(image_id)) is None
        else failing_source(i, image_id, error)
        for i, image_id in zip(indices, ids, strict=True)
    ]


def _shard_sources(
    root: Path,
    ids: Sequence[str],
    indices: Sequence[int],
    cache: DatasetInputCache | None,
) -> Iterable[ImageSource]:
    """The shard stream of the safe ids, with the unsafe ones failing in their places."""
    pairs = list(zip(indices, ids, strict=True))
    errors = {index: error for index, image_id in pairs if (error := id_error(image_id))}
    safe = [(index, image_id) for index, image_id in pairs if index not in errors]
    stream = stream_shard_sources(
        root, [image_id for _, image_id in safe], [index for index, _ in safe], cache
    )
    for index, image_id in pairs:
        error = errors.get(index)
        yield failing_source(index, image_id, error) if error is not None else next(stream)


def unreadable(root: Path, why: str) -> ServiceError:
    """The error of a dataset whose files cannot be read: it names only that dataset."""
    return failed_precondition(
        UNREADABLE, f"dataset {root.name!r} cannot be read: {why}", dataset=root.name
    )


def _listed_shards(root: Path) -> tuple[list[str], dict[str, str]]:
    try:
        return list_sharded(root)
    except ShardError as exc:
        raise unreadable(root, str(exc)) from None


def read_labels(root: Path, ids: list[str]) -> dict[str, str]:
    """The labels of the readable ones of `ids`: labels.csv (path,label) at the root wins;
    else class folders (first-level subfolder); a sharded dataset's labels are its samples'
    labels (`.cls` members, a label column). Classes are counted from these alone."""
    readable = {image_id for image_id in ids if name_problem(image_id) is None}
    if is_sharded(root):
        labels = _listed_shards(root)[1]
    elif (root / LABELS_FILE).is_file():
        try:
            labels = read_labels_csv(root / LABELS_FILE, readable)
        except (LabelError, OSError) as exc:
            raise unreadable(root, str(exc)) from None
    elif ids and all("/" in image_id for image_id in ids):
        labels = {image_id: image_id.split("/", 1)[0] for image_id in ids}
    else:
        labels = {}
    return {image_id: label for image_id, label in labels.items() if image_id in readable}


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

    def describe(self, name: str) -> Dataset:
        """`open`, except that a dataset whose files cannot be read comes back marked with the
        reason (and no images) instead of failing: what a listing shows."""
        try:
            return self.open(name)
        except ServiceError as exc:
            if exc.reason != UNREADABLE:
                raise
            log.warning("%s", exc.message)
            return Dataset(name, self.root_of(name), (), {}, unreadable=exc.message)

    def open(self, name: str) -> Dataset:
        """The dataset listed now: ids, labels (walks the whole folder)."""
        root = self.root_of(name)
        if is_sharded(root):
            shard_ids = _listed_shards(root)[0]
            size = sum(path.stat().st_size for path in shard_files(root))
            return Dataset(
                name=name,
                root=root,
                ids=tuple(shard_ids),
                labels=read_labels(root, shard_ids),
                size_bytes=size,
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
