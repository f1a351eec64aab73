"""Folding pending responses in batches never changes what a layer reducer reports."""

from __future__ import annotations

import numpy as np
import pytest

from maxact.server.scan import layer as layer_module
from maxact.server.scan.layer import LayerReducer, ReduceOptions

CLASSES = ("a", "b", "c")


def _feed(reducer: LayerReducer, responses: np.ndarray, labels: np.ndarray, stop: int) -> None:
    for start in range(0, stop, 16):
        end = min(start + 16, stop)
        reducer.update(responses[start:end], np.arange(start, end), labels[start:end])


def _state(reducer: LayerReducer) -> dict[str, np.ndarray]:
    return {name: np.array(value) for name, value in reducer.state_dict().items()}


def test_folding_every_256_images_equals_folding_every_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    responses = rng.integers(-5, 30, (1000, 40)).astype(np.float32)  # ties on purpose
    labels = rng.integers(-1, 3, 1000)
    options = ReduceOptions(k=7, bottom=True)
    batched = LayerReducer("flat", None, (40,), options, CLASSES)
    monkeypatch.setattr(layer_module, "FOLD_IMAGES", 1)
    eager = LayerReducer("flat", None, (40,), options, CLASSES)
    _feed(eager, responses, labels, 1000)
    monkeypatch.undo()
    _feed(batched, responses, labels, 600)  # read mid-way: what was seen so far, exactly
    partial = LayerReducer("flat", None, (40,), options, CLASSES)
    _feed(partial, responses, labels, 600)
    assert batched.entries(3) == partial.entries(3)
    for start in range(600, 1000, 16):
        end = min(start + 16, 1000)
        batched.update(responses[start:end], np.arange(start, end), labels[start:end])
    expected, got = _state(eager), _state(batched)
    assert expected.keys() == got.keys()
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name
    for channel in range(40):
        column = responses[:, channel]
        order = sorted(range(1000), key=lambda i: (-column[i], i))[:7]
        assert [e.image for e in batched.entries(channel)] == order
