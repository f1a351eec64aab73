"""The reader batches images of different model-input sizes by size, each image exactly once,
and marks checkpoint positions that never skip an image still waiting for its batch."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from maxact.server.data.preprocess import Preprocessing, resolve
from maxact.server.data.reader import Batch, ImageSource, read_batches


def _source(index: int, height: int, width: int) -> ImageSource:
    pixels = np.full((height, width, 3), index, dtype=np.uint8)
    return ImageSource(index, f"img_{index:02d}.png", lambda: Image.fromarray(pixels))


def test_batches_hold_one_size_each_image_once_and_positions_never_skip_an_image() -> None:
    prep = resolve(Preprocessing(), Preprocessing(resize_shorter=8), None, "nchw")
    shapes = [(8, 8), (8, 16), (8, 8), (16, 8), (8, 16), (8, 8), (8, 16), (8, 8), (16, 8)]
    sources = [_source(i, h, w) for i, (h, w) in enumerate(shapes)]
    batches = list(read_batches(sources, prep, 2, threading.Event(), threads=1))
    assert all(isinstance(batch, Batch) for batch in batches)
    seen: list[int] = []
    for batch in batches:
        assert {shapes[i] for i in batch.indices} == {tuple(batch.array.shape[2:])}
        seen += batch.indices
        # every image before the position was yielded by now
        assert set(range(batch.position)) <= set(seen)
    assert sorted(seen) == list(range(len(shapes)))
    assert batches[0].indices == [0, 2]  # the first full batch goes out first
