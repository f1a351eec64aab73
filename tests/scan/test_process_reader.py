"""Decoding in worker processes gives exactly what the thread reader gives, in the same order,
with unreadable images skipped the same way."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.data.process_reader import read_batches_in_processes
from maxact.server.data.reader import Batch, Skipped, file_source, read_batches
from tests.scan.helpers import write_random_images

PREP = ResolvedPreprocessing(
    None, 20, (16, 16), 1 / 255, (0.4, 0.5, 0.6), (0.2, 0.3, 0.2), "bgr", "nchw"
)


def _flatten(items) -> tuple[list, np.ndarray, list]:
    skipped, arrays, order = [], [], []
    for item in items:
        if isinstance(item, Skipped):
            skipped.append((item.index, item.image_id, item.reason))
        else:
            assert isinstance(item, Batch)
            arrays.append(item.array)
            order += list(zip(item.indices, item.ids, strict=True))
    return skipped, np.concatenate(arrays), order


def test_process_reader_equals_thread_reader(tmp_path: Path) -> None:
    ids = write_random_images(tmp_path, 11, 24)
    (tmp_path / ids[4]).write_bytes(b"not an image")
    sources = [file_source(i, image_id, tmp_path / image_id) for i, image_id in enumerate(ids)]
    threads = _flatten(read_batches(sources, PREP, 4, threading.Event(), 2))
    processes = _flatten(read_batches_in_processes(sources, PREP, 4, threading.Event(), 2))
    assert processes[0] == threads[0] and [s[0] for s in processes[0]] == [4]
    assert processes[2] == threads[2]
    np.testing.assert_array_equal(processes[1], threads[1])
