"""The engine's rankings for EVERY channel of several layers equal a brute-force oracle
(plain onnxruntime + numpy + a per-unit greedy written out with `TensorField.box`)."""

from __future__ import annotations

import numpy as np
import pytest

from maxact.server.scan.layer import ReduceOptions
from tests.scan.helpers import engine, oracle_position_mode, random_world, sources

SIZE = 32
IMAGES = 210
K = 7
LAYERS = ["conv_a", "relu_b", "logits"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return random_world(tmp_path_factory.mktemp("engine_bf"), 11, SIZE, IMAGES, LAYERS)


def _scan(world: dict, options: ReduceOptions, layers: list[str] = LAYERS):
    scan = engine(world["model"], layers, SIZE, options)
    outcome = scan.run(sources(world["data"], world["ids"]))
    assert outcome.images_scanned == IMAGES
    return scan


def _image_mode(values: np.ndarray, channel: int, bottom: bool) -> list[tuple]:
    if values.ndim == 2:
        scores, ys, xs = values[:, channel], np.zeros(len(values), int), np.zeros(len(values), int)
    else:
        flat = values[:, channel].reshape(len(values), -1)
        best = flat.argmax(axis=1)
        scores = flat[np.arange(len(values)), best]
        ys, xs = best // values.shape[3], best % values.shape[3]
    order = sorted(range(len(values)), key=lambda i: ((scores[i] if bottom else -scores[i]), i))
    return [(i, int(ys[i]), int(xs[i]), float(scores[i])) for i in order[:K]]


def _position_mode(world: dict, layer: str, channel: int, bottom: bool, cap: int) -> list[tuple]:
    field = world["model"].layer((SIZE, SIZE), layer).field
    return oracle_position_mode(field, world["outputs"][layer], channel, K, bottom, cap)


def _got(scan, layer: str, channel: int, kind: str) -> list[tuple]:
    return [(e.image, e.y, e.x, e.score) for e in scan.reducers[layer].entries(channel, kind)]


def _assert_same(got: list[tuple], expected: list[tuple]) -> None:
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[3] for g in got] == pytest.approx([e[3] for e in expected], rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def full_scan(world: dict):
    options = ReduceOptions(k=K, bottom=True, position=True, position_bottom=True)
    return _scan(world, options)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("bottom", [False, True])
def test_image_mode_every_channel_equals_brute_force(
    world: dict, full_scan, layer: str, bottom: bool
) -> None:
    values = world["outputs"][layer]
    for channel in range(values.shape[1]):
        expected = _image_mode(values, channel, bottom)
        _assert_same(_got(full_scan, layer, channel, "bottom" if bottom else "top"), expected)


@pytest.mark.parametrize("layer", ["conv_a", "relu_b"])
@pytest.mark.parametrize("bottom", [False, True])
def test_position_mode_suppression_every_channel_equals_brute_force(
    world: dict, full_scan, layer: str, bottom: bool
) -> None:
    kind = "position_bottom" if bottom else "position"
    for channel in range(world["outputs"][layer].shape[1]):
        expected = _position_mode(world, layer, channel, bottom, cap=K)
        got = _got(full_scan, layer, channel, kind)
        _assert_same(got, expected)
        if layer == "relu_b" and not bottom:  # large fields: suppression must have acted
            images = [g[0] for g in got]
            assert len(set(images)) >= 2


def test_position_mode_per_image_cap_equals_brute_force(world: dict) -> None:
    options = ReduceOptions(k=K, bottom=False, position=True, per_image_cap=2)
    scan = _scan(world, options, ["conv_a", "relu_b"])
    for layer in ("conv_a", "relu_b"):
        for channel in range(world["outputs"][layer].shape[1]):
            got = _got(scan, layer, channel, "position")
            _assert_same(got, _position_mode(world, layer, channel, False, cap=2))
            images = [g[0] for g in got]
            assert all(images.count(i) <= 2 for i in images)


def test_flat_layer_keeps_no_positions_and_statistics_equal_numpy(world: dict, full_scan) -> None:
    reducer = full_scan.reducers["logits"]
    assert not reducer.spatial
    with pytest.raises(KeyError):
        reducer.entries(0, "position")
    for layer in LAYERS:
        values = world["outputs"][layer]
        responses = values.reshape(IMAGES, values.shape[1], -1).max(axis=2)
        stats = full_scan.reducers[layer].statistics()
        assert stats.images == IMAGES
        assert stats.mean == pytest.approx(responses.astype(np.float64).mean(axis=0), rel=1e-5)
        assert stats.max == pytest.approx(responses.max(axis=0), rel=1e-5)
        assert list(stats.firing_rate) == pytest.approx(list((responses > 0).mean(axis=0)))
        assert list(stats.dead) == list((responses <= 0).all(axis=0))


def test_channel_subset_matches_the_all_channel_scan(world: dict, full_scan) -> None:
    from maxact.server.scan.engine import ScanEngine
    from tests.scan.helpers import prep_for

    prep = prep_for(world["model"], SIZE)
    layer = world["model"].layer(prep.input_size, "relu_b")
    subset = ScanEngine(
        world["model"],
        [layer],
        prep,
        ReduceOptions(k=K, position=True),
        channels={"relu_b": (4,)},
        batch_size=5,
    )
    subset.run(sources(world["data"], world["ids"]))
    for kind in ("top", "bottom", "position"):
        assert _got(subset, "relu_b", 0, kind) == _got(full_scan, "relu_b", 4, kind)
