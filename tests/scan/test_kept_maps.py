"""Every top-k and bottom-k entry of a layer that keeps maps holds the activation map of its
image and channel (the one it was ranked by; plain onnxruntime's up to rounding), whatever
the batch size, however early the reducer folds, after shards are merged and after a state
round trip; the maps held stay within 2 x k per channel; checkpoints leave them out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxact.common.kinds import TopKKind
from maxact.server.scan import kept_maps
from maxact.server.scan.layer import LayerReducer, ReduceOptions
from tests.scan.helpers import engine, random_world, sources

SIZE = 32
IMAGES = 150
K = 5
LAYERS = ["conv_a", "relu_b"]
OPTIONS = ReduceOptions(k=K, bottom=True, keep_maps=("conv_a", "relu_b"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return random_world(tmp_path_factory.mktemp("kept_maps"), 3, SIZE, IMAGES, LAYERS)


def _scan(world: dict, batch: int, start: int = 0, stop: int = IMAGES) -> dict[str, LayerReducer]:
    scan = engine(world["model"], LAYERS, SIZE, OPTIONS, batch_size=batch)
    scan.run(sources(world["data"], world["ids"], start, stop))
    return scan.reducers


def _assert_every_entry_has_its_map(reducers: dict[str, LayerReducer], world: dict) -> None:
    for name, reducer in reducers.items():
        outputs = world["outputs"][name]
        for kind in (TopKKind.TOP, TopKKind.BOTTOM):
            for channel in range(len(reducer.channels)):
                entries = reducer.entries(channel, kind)
                assert len(entries) == K
                for entry in entries:
                    kept = reducer.kept_map(kind, channel, entry.image)
                    assert kept is not None, (name, kind, channel, entry)
                    # the map the entry was ranked by: its score is the map's own element
                    assert float(kept[entry.y, entry.x]) == entry.score
                    # the image's map (the oracle runs whole batches: equal to rounding)
                    np.testing.assert_allclose(
                        kept, outputs[entry.image, channel], rtol=1e-5, atol=1e-5
                    )


@pytest.mark.parametrize("batch", [1, 16, 64])
def test_every_kept_entry_holds_the_map_of_its_image_and_channel(world: dict, batch: int) -> None:
    _assert_every_entry_has_its_map(_scan(world, batch), world)


def test_maps_held_stay_within_two_k_per_channel_and_the_plan(world: dict) -> None:
    for reducer in _scan(world, 16).values():
        assert reducer.kept_maps is not None and reducer.kept_maps.enabled
        reducer.fold()
        maps = reducer.kept_maps.state_dict()
        held = sum(len(maps[f"{kind}/index"]) for kind in ("top", "bottom"))
        assert held <= 2 * K * len(reducer.channels)
        assert reducer.kept_maps.bytes <= reducer.kept_maps.bound


def test_early_folds_under_a_tiny_bound_keep_every_map(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies past the bound make the reducer fold after every batch: same maps."""
    monkeypatch.setattr(kept_maps, "FOLD_PAST", 0.001)
    monkeypatch.setattr(kept_maps, "OVER_PLAN", 1e9)  # never give up here
    _assert_every_entry_has_its_map(_scan(world, 8), world)


def test_merged_shards_and_a_state_round_trip_keep_every_map(world: dict) -> None:
    first, second = _scan(world, 16, 0, 70), _scan(world, 16, 70)
    for name, reducer in first.items():
        other = second[name]
        copy = LayerReducer(name, other.field, (), OPTIONS)
        copy.load_state_dict(other.state_dict())  # as a Ray worker's result arrives
        reducer.merge(copy)
    _assert_every_entry_has_its_map(first, world)
    for reducer in first.values():  # no kept map is a view pinning a whole received state
        assert reducer.kept_maps is not None
        for kind in (TopKKind.TOP, TopKKind.BOTTOM):
            for channel in range(len(reducer.channels)):
                for entry in reducer.entries(channel, kind):
                    kept = reducer.kept_map(kind, channel, entry.image)
                    assert kept is not None and kept.base is None


def test_a_checkpoint_leaves_the_maps_out(world: dict) -> None:
    for name, reducer in _scan(world, 16).items():
        restored = LayerReducer(name, reducer.field, (), OPTIONS)
        restored.load_state(reducer.state())
        entry = restored.entries(0, TopKKind.TOP)[0]
        assert restored.kept_map(TopKKind.TOP, 0, entry.image) is None
        assert entry == reducer.entries(0, TopKKind.TOP)[0]


def test_a_layer_over_twice_its_plan_gives_up_keeping_maps(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kept_maps, "OVER_PLAN", 0.5)
    for reducer in _scan(world, 16).values():
        assert reducer.kept_maps is not None and not reducer.kept_maps.enabled
        entry = reducer.entries(0, TopKKind.TOP)[0]
        assert reducer.kept_map(TopKKind.TOP, 0, entry.image) is None
        assert "maps/top/index" not in reducer.state_dict()


def test_a_scan_keeps_the_maps_of_its_smallest_layers_within_the_bound() -> None:
    planned = [("early", 40), ("deep", 10), ("middle", 25), ("flat", 0)]
    assert kept_maps.layers_keeping_maps(planned, budget=40) == ("deep", "middle")
    assert kept_maps.layers_keeping_maps(planned, budget=9) == ()


def test_the_map_outputs_do_not_change_the_rankings(world: dict) -> None:
    plain = engine(world["model"], LAYERS, SIZE, ReduceOptions(k=K, bottom=True))
    plain.run(sources(world["data"], world["ids"]))
    with_maps = _scan(world, 16)
    for name, reducer in plain.reducers.items():
        for kind in (TopKKind.TOP, TopKKind.BOTTOM):
            for channel in range(len(reducer.channels)):
                assert reducer.entries(channel, kind) == with_maps[name].entries(channel, kind)


def test_a_layer_without_a_spatial_field_keeps_no_maps(tmp_path: Path, world: dict) -> None:
    options = ReduceOptions(k=K, keep_maps=("logits",))
    scan = engine(world["model"], ["logits"], SIZE, options)
    assert scan.reducers["logits"].kept_maps is None
