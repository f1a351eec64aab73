"""The dataset reader: decode and preprocess in worker threads, in dataset order, in batches.

Pillow releases the GIL while decoding and resizing, so a few threads keep onnxruntime fed.
At most `window` images are in flight, which bounds memory whatever the dataset size.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maxact.server import limits
from maxact.server.data.preprocess import ResolvedPreprocessing

if TYPE_CHECKING:
    from maxact.server.data.input_cache import DatasetInputCache

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
    # every image with a smaller index was yielded (in this or an earlier batch, or skipped)
    # by the time this batch was: a consistent point to checkpoint at (None: max index + 1)
    complete_before: int | None = None

    @property
    def position(self) -> int:
        return self.complete_before if self.complete_before is not None else max(self.indices) + 1


@dataclass(frozen=True)
class Skipped:
    image_id: str
    reason: str
    index: int = -1  # the source's index (-1: unknown)


class Prepare(Protocol):
    """Decode and preprocess one image: (model input, original (height, width)); with `out`
    (the image's slot in a batch) the input is written there and `out` is returned."""

    def __call__(
        self, source: ImageSource, prep: ResolvedPreprocessing, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, tuple[int, int]]: ...


def file_source(
    index: int, image_id: str, path: Path, cache: DatasetInputCache | None = None
) -> ImageSource:
    return ImageSource(index, image_id, lambda: Image.open(path), path, cache)


def open_bytes(data: bytes) -> Image.Image:
    """An image held in memory (an upload, a shard sample), within the encoded-size bound."""
    limits.check_image_bytes(len(data))
    return Image.open(io.BytesIO(data))


def failing_source(index: int, image_id: str, error: Exception) -> ImageSource:
    """An image known to be unreadable before it is opened: the scan skips it with `error`."""

    def fail() -> Image.Image:
        raise error

    return ImageSource(index, image_id, fail)


def check_pixels(image: Image.Image) -> None:
    """Decompression-bomb guard: raise from the header alone, before any decoding, when the
    image announces more pixels than the decoded-pixel bound (Pillow itself only warns below
    twice its limit and decodes in full)."""
    width, height = image.size
    limits.check_image_pixels(width, height)


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


def upright_size(source: ImageSource) -> tuple[int, int]:
    """The (height, width) of the image as `load_original` gives it, from its header alone."""
    with source.open() as image:
        check_pixels(image)
        width, height = image.size
        turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation
    return (width, height) if turned else (height, width)


def upright(opened: Image.Image) -> Image.Image:
    """Decode an opened image and apply its EXIF orientation: a new image, usable once the
    file is closed."""
    turned = oriented(opened)
    return turned if turned is not opened else opened.copy()


def prepare_full(
    source: ImageSource, prep: ResolvedPreprocessing, out: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """(model input array, original (height, width)) from a full decode (into `out`)."""
    return decode_pixels(source, prep, lambda image: prep.to_array(image, out))


Finish = Callable[[Image.Image], np.ndarray]
"""The last step on the decoded upright image: `prep.to_pixels` or `prep.to_array`."""


def decode_pixels(
    source: ImageSource, prep: ResolvedPreprocessing, finish: Finish | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """(`finish(image)`, default uint8 RGB model-size pixels; original (height, width)) from
    a full decode, without copying the decoded image."""
    finish = finish or prep.to_pixels
    with source.open() as opened:
        check_pixels(opened)
        image = oriented(opened)
        return finish(image), (image.height, image.width)


def known_total(sources: Iterable[ImageSource]) -> int:
    """How many images `sources` holds when it says so (a list), else 0: unknown (a stream)."""
    return len(sources) if isinstance(sources, Sized) else 0


# long: a third is the docstring; the closures share one generator's pool, queue and groups
def read_batches(
    sources: Iterable[ImageSource],
    prep: ResolvedPreprocessing,
    batch_size: int,
    stop: threading.Event,
    threads: int | None = None,
    prepare: Prepare | None = None,
    slots: tuple[tuple[int, ...], type] | None = None,
) -> Iterator[Batch | Skipped]:
    """Yield batches in dataset order; unreadable images come out as Skipped, in order of
    their failure: before the batch still filling with the images read before them.

    `slots` = (shape, dtype) of every image's model input (fixed-size preprocessing, see
    `prep.array_shape`): each image is prepared straight into its slot of a batch array, so no
    per-image array is allocated and copied again into the batch (`read_into_slots`).

    Images whose model inputs differ in size (per-image sizing) are batched by size: a
    batch holds one size; when more than `window` images wait in partial batches, the one
    holding the earliest image goes out. Rankings break ties by dataset index, so the
    order batches come in does not change any result.

    `sources` may be a list or any iterator, e.g. images still arriving from a client (the
    total need not be known); it is pulled only while fewer than `window` images are in
    flight, and not at all once `stop` is set. Indices must follow the iteration order.
    `prepare` decodes and preprocesses one image (default: full decode, `prep.to_array`).
    """
    prepare = prepare or prepare_full
    workers = threads or max(1, min(4, os.cpu_count() or 1))
    window = max(2 * batch_size, 4 * workers)
    if slots is not None:
        yield from read_into_slots(sources, prep, batch_size, stop, workers, window, prepare, slots)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="maxact-scan-decode") as pool:
        pending: deque[_InFlight] = deque()
        intake = _Intake(sources)
        groups: dict[tuple[int, ...], list[tuple[ImageSource, np.ndarray, tuple[int, int]]]] = {}

        def submit(source: ImageSource) -> None:
            pending.append((source, pool.submit(prepare, source, prep)))

        def complete_before() -> int:
            held = [items[0][0].index for items in groups.values() if items]
            held += [source.index for source, _ in pending]
            return min(held) if held else intake.taken + 1

        def take(shape: tuple[int, ...]) -> Batch:
            return _batch(groups.pop(shape), complete_before())

        try:
            for source, future in intake.in_order(pending, window, stop, submit):
                try:
                    array, size = future.result()
                except Exception as exc:
                    yield Skipped(source.image_id, describe_error(exc), source.index)
                    continue
                group = groups.setdefault(array.shape, [])
                group.append((source, array, size))
                if len(group) == batch_size:
                    yield take(array.shape)
                elif sum(len(items) for items in groups.values()) > window:
                    yield take(min(groups, key=lambda shape: groups[shape][0][0].index))
            while groups and not stop.is_set():
                yield take(min(groups, key=lambda shape: groups[shape][0][0].index))
        finally:
            for _, future in pending:
                future.cancel()


_InFlight = tuple[ImageSource, Future[tuple[np.ndarray, tuple[int, int]]]]


class _Intake:
    """Pulls sources while fewer than `window` images are in flight (an iterator of images
    still arriving is never read ahead further), and remembers where it stands."""

    def __init__(self, sources: Iterable[ImageSource]) -> None:
        self._remaining = iter(sources)
        self.exhausted = False
        self.taken = -1  # the index of the last source pulled

    def in_order(
        self,
        pending: deque[_InFlight],
        window: int,
        stop: threading.Event,
        submit: Callable[[ImageSource], None],
    ) -> Iterator[_InFlight]:
        """The images in flight, oldest first, topping `pending` up to `window` before each
        (`submit` appends one); ends when all are out or `stop` is set."""
        while not stop.is_set():
            while not self.exhausted and len(pending) < window and not stop.is_set():
                source = next(self._remaining, None)
                if source is None:
                    self.exhausted = True
                else:
                    self.taken = source.index
                    submit(source)
            if not pending:
                return
            yield pending.popleft()


@dataclass
class _Slots:
    """One batch array being filled: which source went into which slot, and what came back."""

    array: np.ndarray
    assigned: int = 0  # slots handed to sources
    settled: int = 0  # of those, prepared or skipped
    kept: list[tuple[int, ImageSource]] = field(default_factory=list)  # (slot, source) prepared


def read_into_slots(
    sources: Iterable[ImageSource],
    prep: ResolvedPreprocessing,
    batch_size: int,
    stop: threading.Event,
    workers: int,
    window: int,
    prepare: Prepare,
    slots: tuple[tuple[int, ...], type],
) -> Iterator[Batch | Skipped]:
    """`read_batches` for inputs of one shape: every `batch_size` consecutive sources share a
    batch array and each is prepared into its own slot by a worker; the batch goes out once
    all of them are settled (a skipped image leaves a hole, closed by one copy).

    A yielded batch's array is REUSED for a later batch once the next item is requested (use
    it, or copy it, before asking for more): fresh multi-megabyte arrays cost a page fault and
    a zeroed page per 4 KiB (measured: 10% of a cached scan's CPU), recycled ones nothing."""
    shape, dtype = slots
    spare: list[np.ndarray] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="maxact-scan-decode") as pool:
        pending: deque[_InFlight] = deque()
        batches: deque[_Slots] = deque()  # oldest first; the last one may still be filling
        intake = _Intake(sources)

        def submit(source: ImageSource) -> None:
            if not batches or batches[-1].assigned == batch_size:
                array = spare.pop() if spare else np.empty((batch_size, *shape), dtype)
                batches.append(_Slots(array))
            filling = batches[-1]
            slot = filling.array[filling.assigned]
            filling.assigned += 1
            pending.append((source, pool.submit(prepare, source, prep, out=slot)))

        def ready() -> bool:
            oldest = batches[0]
            closed = oldest.assigned == batch_size or intake.exhausted
            return closed and oldest.settled == oldest.assigned

        def complete_before() -> int:
            return pending[0][0].index if pending else intake.taken + 1

        try:
            for source, future in intake.in_order(pending, window, stop, submit):
                oldest = batches[0]
                slot = oldest.settled
                oldest.settled += 1
                try:
                    future.result()
                    oldest.kept.append((slot, source))
                except Exception as exc:
                    yield Skipped(source.image_id, describe_error(exc), source.index)
                while batches and ready():
                    done = batches.popleft()
                    if done.kept:
                        yield _slot_batch(done, complete_before())
                    spare.append(done.array)  # the consumer is done with it: it asked for more
        finally:
            for _, future in pending:
                future.cancel()


def _slot_batch(done: _Slots, complete_before: int) -> Batch:
    used = [slot for slot, _ in done.kept]
    whole = used == list(range(done.assigned)) and done.assigned == len(done.array)
    return Batch(
        indices=[source.index for _, source in done.kept],
        ids=[source.image_id for _, source in done.kept],
        array=done.array if whole else done.array[used],
        complete_before=complete_before,
    )


def _batch(
    items: list[tuple[ImageSource, np.ndarray, tuple[int, int]]], complete_before: int | None
) -> Batch:
    return Batch(
        indices=[source.index for source, _, _ in items],
        ids=[source.image_id for source, _, _ in items],
        array=np.stack([array for _, array, _ in items]),
        complete_before=complete_before,
    )


def describe_error(exc: Exception) -> str:
    """Why an image was skipped, without the server's file paths."""
    if isinstance(exc, UnidentifiedImageError):
        return "cannot read image: not a recognised image format, or corrupt"
    if isinstance(exc, FileNotFoundError):
        return "cannot read image: the file vanished during the scan"
    text = _PATH_IN_QUOTES.sub("'...'", str(exc)) or type(exc).__name__
    return f"cannot read image: {text}"
