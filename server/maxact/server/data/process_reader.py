"""The dataset reader in worker processes, for machines with many cores.

Decoding holds the GIL ~1 ms per image between Pillow's GIL-free steps, which caps decode threads
near 1,000-1,400 images/s whatever the core count; a GPU consumes more. Here each task decodes
one batch of image files in a worker process straight into a shared-memory slot (no pickling of
pixels); the parent copies the batch out (one memcpy) so the slot is free at once. Order and
skipping behave like `reader.read_batches`: batches in dataset order, an unreadable image comes
out as `Skipped` before the batch it would have been in.

Used only for file sources (a path, no decoded-input cache) and when the machine has more than
`MIN_CORES` cores: on fewer, onnxruntime needs the cores and threads decode as fast (measured).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np

from maxact.common.kinds import Layout
from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.data.reader import Batch, ImageSource, Skipped, describe_error, file_source

MIN_CORES = 5

_worker: dict[str, object] = {}


def use_processes(sources: object, prep: ResolvedPreprocessing) -> bool:
    """Processes pay off with spare cores, and only for plain file sources decoded to one
    input size."""
    if (os.cpu_count() or 1) < MIN_CORES or not isinstance(sources, Sequence):
        return False
    if prep.fixed_size is None or not prep.pixels_exact:
        return False
    return all(s.path is not None and s.cache is None for s in sources)


def _init(prep: ResolvedPreprocessing, draft: bool, normalised: bool) -> None:
    _worker.update(prep=prep, draft=draft, normalised=normalised, slots={})


# a chunk's (index, id, size) of the decoded images and (index, id, reason) of the failed ones
ChunkResult = tuple[list[tuple[int, str, tuple[int, int]]], list[tuple[int, str, str]]]


def _decode_chunk(
    slot: str, shape: tuple[int, ...], dtype: str, items: list[tuple[int, str, str]]
) -> ChunkResult:
    """Decode `items` (index, id, path) into slot rows 0..m-1; (decoded, failed) in order."""
    from maxact.server.data.decode import prepare

    slots: dict[str, SharedMemory] = _worker["slots"]  # type: ignore[assignment]
    memory = slots.get(slot)
    if memory is None:
        # (workers share the parent's resource tracker, so attaching registers nothing new;
        # the parent unlinks the segment)
        memory = slots[slot] = SharedMemory(name=slot)
    rows = np.ndarray((len(items), *shape), dtype=dtype, buffer=memory.buf)
    decoded: list[tuple[int, str, tuple[int, int]]] = []
    failed: list[tuple[int, str, str]] = []
    for index, image_id, path in items:
        try:
            array, size = prepare(
                file_source(index, image_id, Path(path)),
                _worker["prep"],  # type: ignore[arg-type]
                bool(_worker["draft"]),
                bool(_worker["normalised"]),
            )
        except Exception as exc:
            failed.append((index, image_id, describe_error(exc)))
            continue
        rows[len(decoded)] = array
        decoded.append((index, image_id, size))
    del rows
    return decoded, failed


# long: the shared-memory slots live exactly as long as the pool loop, in one try/finally
def read_batches_in_processes(
    sources: Sequence[ImageSource],
    prep: ResolvedPreprocessing,
    batch_size: int,
    stop: threading.Event,
    workers: int | None = None,
    draft: bool = False,
    normalised: bool = True,
) -> Iterator[Batch | Skipped]:
    """Like `read_batches` for file sources, decoding in `workers` processes (default: all
    cores but one)."""
    workers = workers or max(1, (os.cpu_count() or 2) - 1)
    height, width = prep.input_size
    shape: tuple[int, ...] = (height, width, 3)
    dtype: np.dtype = np.dtype(np.uint8)
    if normalised:
        shape = (3, height, width) if prep.layout == Layout.NCHW else (height, width, 3)
        dtype = np.dtype(np.float32)
    depth = 2 * workers
    slots = [
        SharedMemory(create=True, size=batch_size * int(np.prod(shape)) * dtype.itemsize)
        for _ in range(depth)
    ]
    free = deque(slots)
    chunks = (sources[i : i + batch_size] for i in range(0, len(sources), batch_size))
    context = multiprocessing.get_context("forkserver")
    pending: deque[tuple[SharedMemory, Future[ChunkResult]]] = deque()
    try:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init, initargs=(prep, draft, normalised)
        ) as pool:
            exhausted = False
            while not stop.is_set():
                while not exhausted and free and not stop.is_set():
                    chunk = next(chunks, None)
                    if chunk is None:
                        exhausted = True
                        break
                    slot = free.popleft()
                    items = [(s.index, s.image_id, str(s.path)) for s in chunk]
                    future = pool.submit(_decode_chunk, slot.name, shape, dtype.str, items)
                    pending.append((slot, future))
                if not pending:
                    break
                slot, future = pending.popleft()
                decoded, failed = future.result()
                array = np.ndarray((len(decoded), *shape), dtype=dtype, buffer=slot.buf).copy()
                free.append(slot)
                for index, image_id, reason in failed:
                    yield Skipped(image_id, reason, index)
                if decoded:
                    yield Batch(
                        [index for index, _, _ in decoded],
                        [image_id for _, image_id, _ in decoded],
                        array,
                    )
            for _, future in pending:
                future.cancel()
    finally:
        for slot in slots:
            slot.close()
            slot.unlink()
