"""Shards scanned separately and merged equal the union scanned at once, EXACTLY: top-k, bottom-k
and position-mode entries (ids, units, scores) and every statistic, including per-class ones."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from maxact.server.scan.exact import ExactSums
from maxact.server.scan.layer import ReduceOptions
from tests.onnx_models import random_cnn
from tests.scan.helpers import engine, label_array, load, sources, write_random_images

SIZE = 32
IMAGES = 200
LAYERS = ["conv_a", "relu_b", "logits"]
OPTIONS = ReduceOptions(k=6, bottom=True, position=True, position_bottom=True, per_image_cap=3)


def _state(scan) -> dict:
    """Everything a reducer holds, as plain comparable values."""
    state = {}
    for name, reducer in scan.reducers.items():
        for kind in reducer.kinds():
            for channel in range(len(reducer.channels)):
                state[name, kind, channel] = reducer.entries(channel, kind)
        stats = reducer.stats
        state[name, "limbs"] = stats.sums.limbs.tolist()
        state[name, "class_limbs"] = stats.class_sums.limbs.tolist()
        state[name, "fired"] = stats.fired.tolist()
        state[name, "max"] = stats.maximum.tolist()
        state[name, "class_images"] = stats.class_images.tolist()
    return state


def _summaries(scan, labels: np.ndarray) -> dict:
    out = {}
    for name, reducer in scan.reducers.items():
        s = reducer.statistics(labels)
        out[name] = (
            s.images,
            s.mean.tolist(),
            s.max.tolist(),
            s.firing_rate.tolist(),
            s.dead.tolist(),
            np.nan_to_num(s.class_mean).tolist(),
            s.selectivity.tolist(),
            s.preferred_class.tolist(),
            s.top_class_histogram.tolist(),
            s.top_units_per_class,
        )
    return out


@pytest.mark.parametrize(("split", "batch"), [(83, 16), (150, 7)])
def test_merged_shards_equal_the_union_exactly(tmp_path: Path, split: int, batch: int) -> None:
    model = load(random_cnn(seed=4, size=SIZE), tmp_path / "models", "random")
    data = tmp_path / "data"
    ids = write_random_images(data, IMAGES, SIZE, seed=9)
    classes, labels = label_array(data, ids)
    assert classes == ("class_0", "class_1", "class_2")

    whole = engine(model, LAYERS, SIZE, OPTIONS, classes)
    whole.run(sources(data, ids), labels)
    shard_a = engine(model, LAYERS, SIZE, OPTIONS, classes, batch_size=batch)
    shard_a.run(sources(data, ids, 0, split), labels)
    shard_b = engine(model, LAYERS, SIZE, OPTIONS, classes, batch_size=batch)
    shard_b.run(sources(data, ids, split), labels)
    for name in LAYERS:
        shard_b.reducers[name].merge(shard_a.reducers[name])  # order does not matter either

    assert _state(shard_b) == _state(whole)
    assert _summaries(shard_b, labels) == _summaries(whole, labels)


def test_exact_sums_do_not_depend_on_grouping_or_order() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(0, 1e6, 500), rng.normal(0, 1e-6, 500), [1e30, -1e30, 3e-45, 0.0]]
    ).astype(np.float32)
    whole = ExactSums(1)
    whole.add(np.zeros(values.size, int), values)
    parts = [ExactSums(1) for _ in range(3)]
    shuffled = rng.permutation(values)
    for i, chunk in enumerate(np.array_split(shuffled, 3)):
        parts[i].add(np.zeros(chunk.size, int), chunk)
    parts[2].merge(parts[0])
    parts[2].merge(parts[1])
    assert parts[2].limbs.tolist() == whole.limbs.tolist()
    exact = sum(Fraction(float(v)) for v in values)
    assert whole.values()[0] == pytest.approx(float(exact), rel=1e-12, abs=1e-30)
