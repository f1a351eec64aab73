"""Image folders under the data root: stable ids, labels, and safe listing."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from maxact.client.images import walk_images
from maxact.server.errors import invalid_argument, not_found, shown
from maxact.server.paths import check_name, is_inside, resolve_under


@dataclass(frozen=True)
class Dataset:
    """A listed dataset: ids in code-point order (the dataset order), paths and labels."""

    name: str
    root: Path
    ids: tuple[str, ...]
    labels: dict[str, str]

    def path_of(self, image_id: str) -> Path:
        return self.root / image_id

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.values()))


def list_image_ids(root: Path) -> list[str]:
    """Image files under `root`, recursively, as '/'-joined relative paths in code-point order.

    Symlinks that lead outside the root are ignored so a dataset can never expose other files.
    """

    def stays_inside(path: Path) -> bool:
        return not path.is_symlink() or is_inside(root, path)

    return [image_id for image_id, _ in walk_images(root, stays_inside)]


def read_labels(root: Path, ids: list[str]) -> dict[str, str]:
    """labels.csv (path,label) at the root wins; else class folders (first-level subfolder)."""
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

    def __init__(self, data_root: Path | None) -> None:
        self.data_root = data_root

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
        ids = list_image_ids(root)
        return Dataset(name=name, root=root, ids=tuple(ids), labels=read_labels(root, ids))

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
