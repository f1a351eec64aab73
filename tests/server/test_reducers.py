"""RunningTopK: equals a full sort with deterministic ties, and shards merge exactly."""

from __future__ import annotations

import numpy as np
import pytest

from maxact.server.scan.reducers import RunningTopK


def _brute(scores: np.ndarray, channel: int, k: int, largest: bool) -> list[tuple[float, int]]:
    column = scores[:, channel]
    order = sorted(range(len(column)), key=lambda i: ((-column[i] if largest else column[i]), i))
    return [(float(column[i]), i) for i in order[:k]]


@pytest.mark.parametrize("largest", [True, False])
def test_streamed_batches_equal_a_full_sort_with_earlier_image_winning_ties(
    largest: bool,
) -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, (500, 4)).astype(np.float32)  # many ties on purpose
    reducer = RunningTopK(4, 9, largest=largest)
    for start in range(0, 500, 37):
        batch = scores[start : start + 37]
        images = np.arange(start, start + len(batch))
        zeros = np.zeros(batch.shape, dtype=np.int64)
        reducer.update(batch, images, zeros, zeros)
    for channel in range(4):
        got = [(e.score, e.image) for e in reducer.entries(channel)]
        assert got == _brute(scores, channel, 9, largest)


def test_merging_disjoint_shards_equals_scanning_their_union() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(300, 3))
    ys = rng.integers(0, 7, (300, 3))
    xs = rng.integers(0, 7, (300, 3))
    whole = RunningTopK(3, 5)
    whole.update(scores, np.arange(300), ys, xs)
    shard_a, shard_b = RunningTopK(3, 5), RunningTopK(3, 5)
    shard_a.update(scores[:130], np.arange(130), ys[:130], xs[:130])
    shard_b.update(scores[130:], np.arange(130, 300), ys[130:], xs[130:])
    shard_b.merge(shard_a)
    for channel in range(3):
        assert shard_b.entries(channel) == whole.entries(channel)


def test_fewer_candidates_than_k_returns_only_real_entries() -> None:
    reducer = RunningTopK(1, 5)
    reducer.update(
        np.array([[1.0], [3.0]]), np.array([0, 1]), np.zeros((2, 1), int), np.zeros((2, 1), int)
    )
    assert [e.image for e in reducer.entries(0)] == [1, 0]


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("levels", [3, 50, 100_000])  # heavy ties at the k-th value .. none
def test_large_offers_partitioned_before_sorting_equal_a_full_sort(
    largest: bool, levels: int
) -> None:
    rng = np.random.default_rng(levels)
    scores = rng.integers(0, levels, (1200, 6)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.01] = np.nan  # never ranked ahead of a number
    reducer = RunningTopK(6, 9, largest=largest)
    for start in range(0, 1200, 400):  # 400 candidates per channel: the partitioned path
        batch = scores[start : start + 400]
        zeros = np.zeros(batch.shape, dtype=np.int64)
        reducer.update(batch, np.arange(start, start + 400), zeros, zeros)
    finite = np.where(np.isnan(scores), -np.inf if largest else np.inf, scores)
    for channel in range(6):
        got = [(e.score, e.image) for e in reducer.entries(channel)]
        assert got == _brute(finite, channel, 9, largest)
