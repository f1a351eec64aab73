"""The dataset reader: decode and preprocess in worker threads, in dataset order, in batches.

Pillow releases the GIL while decoding and resizing, so a few threads keep onnxruntime fed.
At most `window` images are in flight, which bounds memory whatever the dataset size.
"""

from __future__ import annotations

import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maxact.server.data.preprocess import ResolvedPreprocessing

if TYPE_CHECKING:
    from maxact.server.data.input_cache import DatasetInputCache

# Decompression-bomb guard: refuse images over this many pixels from the header alone, before
# any decoding (Pillow itself only warns below twice its limit and decodes in full).
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
_PATH_IN_QUOTES = re.compile(r"['\"]/[^'\"]*['\"]")


@dataclass(frozen=True)
class ImageSource:
    """An image to scan: its id, its position in dataset order, and how to get its bytes."""

    index: int
    image_id: str
    open: Callable[[], Image.Image]
    path: Path | None = None  # a file on the server: what the decoded-input cache keys on
    cache: DatasetInputCache | None = None  # this image's dataset in the input cache


@dataclass
class Batch:
    indices: list[int]
    ids: list[str]
    array: np.ndarray  # [B, ...] model input
    original_sizes: list[tuple[int, int]]  # (height, width)


@dataclass(frozen=True)
class Skipped:
    image_id: str
    reason: str
    index: int = -1  # the source's index (-1: unknown)


Prepare = Callable[[ImageSource, ResolvedPreprocessing], tuple[np.ndarray, tuple[int, int]]]


def file_source(
    index: int, image_id: str, path: Path, cache: DatasetInputCache | None = None
) -> ImageSource:
    return ImageSource(index, image_id, lambda: Image.open(path), path, cache)


def check_pixels(image: Image.Image) -> None:
    """Raise before decoding when the header announces more than MAX_PIXELS pixels."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{MAX_PIXELS:,} (possible decompression bomb)"
        )


def load_original(source: ImageSource) -> Image.Image:
    """Decode fully, upright (EXIF orientation applied): the "original image" boxes refer to."""
    with source.open() as image:
        check_pixels(image)
        return upright(image)


EXIF_ORIENTATION = 0x0112


def oriented(opened: Image.Image) -> Image.Image:
    """Decode an opened image and apply its EXIF orientation; without an orientation tag this
    is `opened` itself (no copy), so use it before the file is closed."""
    opened.load()
    if opened.getexif().get(EXIF_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(opened)
    return opened


def upright(opened: Image.Image) -> Image.Image:
    """Decode an opened image and apply its EXIF orientation: a new image, usable once the
    file is closed."""
    turned = oriented(opened)
    return turned if turned is not opened else opened.copy()


def prepare_full(
    source: ImageSource, prep: ResolvedPreprocessing
) -> tuple[np.ndarray, tuple[int, int]]:
    """(model input array, original (height, width)) from a full decode."""
    pixels, size = decode_pixels(source, prep)
    return prep.normalise(pixels), size


def decode_pixels(
    source: ImageSource, prep: ResolvedPreprocessing
) -> tuple[np.ndarray, tuple[int, int]]:
    """(uint8 RGB model-size pixels, original (height, width)) from a full decode."""
    with source.open() as opened:
        check_pixels(opened)
        image = oriented(opened)
        return prep.to_pixels(image), (image.height, image.width)


def known_total(sources: Iterable[ImageSource]) -> int:
    """How many images `sources` holds when it says so (a list), else 0: unknown (a stream)."""
    return len(sources) if isinstance(sources, Sized) else 0


def read_batches(
    sources: Iterable[ImageSource],
    prep: ResolvedPreprocessing,
    batch_size: int,
    stop: threading.Event,
    threads: int | None = None,
    prepare: Prepare | None = None,
) -> Iterator[Batch | Skipped]:
    """Yield batches in dataset order; unreadable images come out as Skipped, in order of
    their failure: before the batch still filling with the images read before them.

    `sources` may be a list or any iterator, e.g. images still arriving from a client (the
    total need not be known); it is pulled only while fewer than `window` images are in
    flight, and not at all once `stop` is set. Indices must follow the iteration order.
    `prepare` decodes and preprocesses one image (default: full decode, `prep.to_array`).
    """
    prepare = prepare or prepare_full
    workers = threads or max(1, min(4, os.cpu_count() or 1))
    window = max(2 * batch_size, 4 * workers)
    with ThreadPoolExecutor(workers, thread_name_prefix="maxact-scan-decode") as pool:
        pending: deque[tuple[ImageSource, Future[tuple[np.ndarray, tuple[int, int]]]]] = deque()
        remaining = iter(sources)
        exhausted = False
        current: list[tuple[ImageSource, np.ndarray, tuple[int, int]]] = []
        try:
            while not stop.is_set():
                while not exhausted and len(pending) < window and not stop.is_set():
                    next_source = next(remaining, None)
                    if next_source is None:
                        exhausted = True
                    else:
                        pending.append((next_source, pool.submit(prepare, next_source, prep)))
                if not pending:
                    break
                source, future = pending.popleft()
                try:
                    array, size = future.result()
                except Exception as exc:
                    yield Skipped(source.image_id, describe_error(exc), source.index)
                    continue
                current.append((source, array, size))
                if len(current) == batch_size:
                    yield _batch(current)
                    current = []
            if current and not stop.is_set():
                yield _batch(current)
        finally:
            for _, future in pending:
                future.cancel()


def _batch(items: list[tuple[ImageSource, np.ndarray, tuple[int, int]]]) -> Batch:
    return Batch(
        indices=[source.index for source, _, _ in items],
        ids=[source.image_id for source, _, _ in items],
        array=np.stack([array for _, array, _ in items]),
        original_sizes=[size for _, _, size in items],
    )


def describe_error(exc: Exception) -> str:
    """Why an image was skipped, without the server's file paths."""
    if isinstance(exc, UnidentifiedImageError):
        return "cannot read image: not a recognised image format, or corrupt"
    if isinstance(exc, FileNotFoundError):
        return "cannot read image: the file vanished during the scan"
    text = _PATH_IN_QUOTES.sub("'...'", str(exc)) or type(exc).__name__
    return f"cannot read image: {text}"
