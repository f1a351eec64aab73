"""Keep client-streamed images as a new dataset, all or nothing.

Images go into a hidden folder under the data root as they arrive and the folder is renamed
to the dataset's name only when the stream completes, so a cancelled or failed stream leaves
nothing a scan could pick up (a server killed mid-stream leaves a hidden folder, removed at
the next start).
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from pathlib import Path

from maxact.common.image_files import IMAGE_SUFFIXES
from maxact.server.data.labels import LABELS_FILE, label_problem
from maxact.server.errors import (
    already_exists,
    failed_precondition,
    invalid_argument,
    shown,
)
from maxact.server.paths import check_name, resolve_under

TEMP_PREFIX = ".incoming-"


def remove_stale_incoming(data_root: Path | None) -> None:
    """Hidden folders of streams that never completed (the server was killed)."""
    if data_root is None or not data_root.is_dir():
        return
    for entry in data_root.iterdir():
        if entry.is_dir() and entry.name.startswith(TEMP_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)


class DatasetWriter:
    def __init__(self, data_root: Path | None, name: str) -> None:
        if data_root is None:
            raise failed_precondition(
                "DATA_ROOT_REQUIRED",
                "the server was started without --data-root: it cannot keep images",
            )
        check_name(name, "dataset")
        if "/" in name:
            raise invalid_argument(
                "INVALID_NAME", f"invalid dataset name {shown(name)}: a folder name, without '/'"
            )
        self.target = resolve_under(data_root, name, "dataset")
        if self.target.exists():
            raise already_exists(
                "DATASET_EXISTS",
                f"dataset {name!r} already exists on the server; choose another name",
                dataset=name,
            )
        self.name = name
        self.folder = data_root / f"{TEMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir()
        self._labels: list[tuple[str, str]] = []

    def add(self, image_id: str, data: bytes, label: str) -> None:
        check_name(image_id, "image")
        if Path(image_id).suffix.lower() not in IMAGE_SUFFIXES:
            raise invalid_argument(
                "INVALID_IMAGE_ID",
                f"image id {image_id!r} must end in an image suffix ({sorted(IMAGE_SUFFIXES)}) "
                "to be kept as a dataset",
                image=image_id,
            )
        problem = label_problem(label)
        if problem is not None:
            raise invalid_argument(
                "LABEL_TOO_LONG", f"the label of image {image_id!r}: {problem}", image=image_id
            )
        path = resolve_under(self.folder, image_id, "image")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if label:
            self._labels.append((image_id, label))

    def commit(self) -> None:
        """Rename the folder into place (refused if the name was taken meanwhile)."""
        if self._labels:
            with (self.folder / LABELS_FILE).open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows([("path", "label"), *self._labels])
        try:
            os.rename(self.folder, self.target)  # atomic on one file system
        except OSError as exc:
            self.abort()
            raise already_exists(
                "DATASET_EXISTS",
                f"dataset {self.name!r} appeared while the images streamed: {exc.strerror}",
            ) from None

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
