"""Local images for `Client.topk_images` / `maxact topk --images`: ids, order, lazy reading.

Ids are those of a server dataset (docs/contracts.md, "Names"; the server lists its datasets
with the same `walk_images`): a folder contributes its image files found recursively (hidden
files and folders skipped), each with its path relative to the folder, '/'-joined, sorted by
code point; a file given alone contributes its base name. Several
arguments are concatenated in the order given; an id appearing twice is an error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from maxact.common.image_files import walk_images
from maxact.v1 import topk_service_pb2

ImageData = bytes | str | os.PathLike[str]
"""What an image is sent from: its bytes, or a local path read when it is sent."""


def collect_images(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """(id, path) of every image the arguments name, in the order they are sent.

    Raises ValueError for a missing path, a folder without images, or a duplicate id.
    Files are listed, not read.
    """
    collected: list[tuple[str, Path]] = []
    seen: dict[str, Path] = {}
    for argument in paths:
        path = Path(argument)
        if path.is_dir():
            found = walk_images(path)
            if not found:
                raise ValueError(f"no images (png, jpg, bmp, webp, gif, tiff) under {path}")
        elif path.is_file():
            found = [(path.name, path)]
        else:
            raise ValueError(f"no such file or folder: {path}")
        for image_id, image_path in found:
            if image_id in seen:
                raise ValueError(
                    f"duplicate image id {image_id!r}: {seen[image_id]} and {image_path}"
                )
            seen[image_id] = image_path
            collected.append((image_id, image_path))
    return collected


def as_images(
    images: Iterable[tuple[str, ImageData]]
    | Iterable[str | os.PathLike[str]]
    | str
    | os.PathLike[str],
) -> Iterable[tuple[str, ImageData]]:
    """(id, data) pairs as given, or `collect_images` of paths (folders and files)."""
    if isinstance(images, (str, os.PathLike)):
        return collect_images([images])
    iterator = iter(images)
    first = next(iterator, None)
    if first is None:
        return []
    if isinstance(first, (str, os.PathLike)):
        return collect_images([first, *iterator])  # type: ignore[list-item]
    return _chain(first, iterator)  # type: ignore[arg-type]


def _chain(
    first: tuple[str, ImageData], rest: Iterator[tuple[str, ImageData]]
) -> Iterator[tuple[str, ImageData]]:
    yield first
    yield from rest


class ImageRequests:
    """The request stream of StreamTopKImages: the query, then one message per image, each
    file read only when gRPC asks for its message (so a folder is never held in memory).

    gRPC pulls it from its own thread. A local error (an unreadable file) cancels the call
    (`attach` gives the cancel function) and is kept in `error`, so the caller raises it
    instead of gRPC's CANCELLED; the stream never just ends early, which would scan a part.
    """

    def __init__(
        self,
        query: topk_service_pb2.TopKQuery,
        images: Iterable[tuple[str, ImageData]],
        keep_as_dataset: str = "",
    ) -> None:
        self._query = query
        self._keep_as_dataset = keep_as_dataset
        self._images = images
        self._attached = threading.Event()
        self._cancel: Callable[[], object] = lambda: None
        self.error: BaseException | None = None

    def attach(self, cancel: Callable[[], object]) -> None:
        """Give the call's cancel, once the call exists."""
        self._cancel = cancel
        self._attached.set()

    def __iter__(self) -> Iterator[topk_service_pb2.StreamTopKImagesRequest]:
        yield topk_service_pb2.StreamTopKImagesRequest(
            query=self._query, keep_as_dataset=self._keep_as_dataset
        )
        try:
            for image_id, data in self._images:
                if not isinstance(data, bytes):
                    data = Path(data).read_bytes()
                image = topk_service_pb2.ClientImage(id=image_id, data=data)
                yield topk_service_pb2.StreamTopKImagesRequest(image=image)
        except Exception as exc:
            self.error = exc
            self._attached.wait()
            self._cancel()
