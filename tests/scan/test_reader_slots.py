"""Images prepared straight into batch slots give what per-image arrays stacked give: the same
images, in order, holes from unreadable images closed, checkpoint positions never skipping one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
from PIL import Image

from maxact.server.data.decode import prepare
from maxact.server.data.preprocess import Preprocessing, resolve
from maxact.server.data.reader import Batch, ImageSource, Skipped, read_batches

BROKEN = {
    3,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    28,
    29,
    30,
    31,
    39,
}  # a whole batch too


def _open(index: int) -> Image.Image:
    if index in BROKEN:
        raise OSError(f"image {index} is truncated")
    rng = np.random.default_rng(index)
    return Image.fromarray(rng.integers(0, 256, (20 + index % 5, 30, 3), dtype=np.uint8))


def _sources(count: int) -> list[ImageSource]:
    return [ImageSource(i, f"{i:03d}.png", partial(_open, i)) for i in range(count)]


@pytest.mark.parametrize("normalised", [True, False])
@pytest.mark.parametrize("stream", [False, True])
def test_slot_batches_equal_stacked_batches_with_holes_closed(
    normalised: bool, stream: bool
) -> None:
    prep = resolve(Preprocessing(), Preprocessing(size=(12, 16)), None, "nchw")
    one = partial(prepare, draft=False, normalised=normalised)
    shape = prep.array_shape(normalised)
    assert shape is not None
    dtype = np.float32 if normalised else np.uint8

    def items(slots: bool) -> list[Batch | Skipped]:
        sources: list[ImageSource] | Iterator[ImageSource] = _sources(45)
        if stream:  # images still arriving: no total known
            sources = iter(sources)
        found: list[Batch | Skipped] = []
        for item in read_batches(
            sources, prep, 8, threading.Event(), 2, one, (shape, dtype) if slots else None
        ):  # a slot batch's array is reused once the next item is asked for: copy it now
            found.append(
                replace(item, array=item.array.copy()) if isinstance(item, Batch) else item
            )
        return found

    stacked, slotted = items(False), items(True)
    skipped = [item.index for item in slotted if isinstance(item, Skipped)]
    assert skipped == sorted(BROKEN) == [i.index for i in stacked if isinstance(i, Skipped)]
    expected = {
        index: array
        for batch in stacked
        if isinstance(batch, Batch)
        for index, array in zip(batch.indices, batch.array, strict=True)
    }
    seen: list[int] = []
    for batch in (item for item in slotted if isinstance(item, Batch)):
        assert batch.array.dtype == dtype and batch.array.shape == (len(batch.indices), *shape)
        for index, array in zip(batch.indices, batch.array, strict=True):
            np.testing.assert_array_equal(array, expected[index])
        seen += batch.indices
        assert set(range(batch.position)) <= set(seen) | BROKEN  # a safe checkpoint
    assert seen == sorted(expected) == [i for i in range(45) if i not in BROKEN]
