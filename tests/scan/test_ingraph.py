"""In-graph reductions give exactly what the numpy path gives, which equals brute force.

Every configuration (reductions in the graph or in numpy, session.run or IO binding on the CPU
provider) scans the same pre-decoded batches; the reducers' whole state (top-k, bottom-k,
position mode, statistics) must be identical. Layers cover a plain NCHW conv, a ReLU with many
ties (whole channels at 0), an NHWC tensor, a quantised map (ties inside a map), and a flat one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maxact.server.graph.reductions import LayerReduction
from maxact.server.scan.engine import ScanEngine
from maxact.server.scan.layer import ReduceOptions
from tests.onnx_models import layer_outputs, random_cnn
from tests.scan.helpers import batches_of, load, prep_for

SIZE = 24
IMAGES = 37
LAYERS = ["conv_a", "relu_a", "nhwc", "coarse", "logits"]
CONFIGS = [(True, False), (True, True), (False, True)]  # (in_graph, io_binding)


def _model() -> onnx.ModelProto:
    """random_cnn plus an NHWC view of relu_a and a quantised (tie-heavy) copy of conv_b."""
    model = random_cnn(seed=3, size=SIZE)
    graph = model.graph
    graph.node.extend(
        [
            helper.make_node("Transpose", ["relu_a"], ["nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Mul", ["conv_b", "two"], ["doubled"]),
            helper.make_node("Floor", ["doubled"], ["coarse"]),
        ]
    )
    graph.initializer.append(numpy_helper.from_array(np.asarray(2.0, np.float32), "two"))
    graph.output.extend(
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("nhwc", "coarse")]
    )
    return model


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root: Path = tmp_path_factory.mktemp("ingraph")
    proto = _model()
    model = load(proto, root / "models", "ingraph")
    rng = np.random.default_rng(0)
    inputs = rng.normal(0, 1, (IMAGES, 3, SIZE, SIZE)).astype(np.float32)
    inputs[5] = 0.0  # an all-equal image: every map is constant, ties everywhere
    labels = rng.integers(-1, 3, IMAGES)
    return {"model": model, "proto": proto, "inputs": inputs, "labels": labels}


def _scan(world: dict, options: ReduceOptions, in_graph: bool, io_binding: bool, **kw):
    model = world["model"]
    prep = prep_for(model, SIZE)
    layers = [model.layer(prep.input_size, name) for name in kw.pop("layers", LAYERS)]
    engine = ScanEngine(
        model,
        layers,
        prep,
        options,
        classes=("a", "b", "c"),
        batch_size=8,
        in_graph=in_graph,
        io_binding=io_binding,
        **kw,
    )
    engine.run_batches(batches_of(world["inputs"], 8), IMAGES, world["labels"])
    return engine


def _states(engine: ScanEngine) -> dict[str, dict[str, np.ndarray]]:
    return {name: reducer.state_dict() for name, reducer in engine.reducers.items()}


def _assert_equal_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for layer in a:
        assert a[layer].keys() == b[layer].keys()
        for key in a[layer]:
            np.testing.assert_array_equal(a[layer][key], b[layer][key], err_msg=f"{layer} {key}")


OPTIONS = {
    "image+position+stats": ReduceOptions(k=5, bottom=True, position=True, position_bottom=True),
    "unit": ReduceOptions(k=4, bottom=True, unit=(2, 3)),
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_in_graph_and_io_binding_equal_the_numpy_path(world: dict, options) -> None:
    layers = LAYERS if options.unit is None else ["conv_a", "nhwc", "coarse"]
    reference = _states(_scan(world, options, in_graph=False, io_binding=False, layers=layers))
    for in_graph, io_binding in CONFIGS:
        got = _states(_scan(world, options, in_graph, io_binding, layers=layers))
        _assert_equal_states(got, reference)


def test_channel_subset_in_graph_equals_numpy_path(world: dict) -> None:
    options = ReduceOptions(k=3, bottom=True)
    subset = {"conv_a": (6, 1, 4), "nhwc": (0, 7), "coarse": (5,)}
    kw = {"layers": ["conv_a", "nhwc", "coarse"], "channels": subset}
    reference = _states(_scan(world, options, False, False, **kw))
    engine = _scan(world, options, True, True, **kw)
    kinds = {r.tensor: r.kind for r in engine.reductions}
    assert kinds == {"conv_a": "max", "nhwc": "max", "coarse": "max"}
    _assert_equal_states(_states(engine), reference)


def test_only_reductions_leave_the_session_unless_position_mode(world: dict) -> None:
    engine = _scan(world, ReduceOptions(k=2, bottom=True), True, False)
    outputs = {o.name: o.shape for o in engine.session.get_outputs()}
    assert set(outputs) == {name for r in engine.reductions for name in r.outputs}
    assert "conv_a" not in outputs and "nhwc" not in outputs and "logits" in outputs
    position = _scan(world, ReduceOptions(k=2, position=True), True, False, layers=["conv_a"])
    assert position.reductions == (
        LayerReduction("conv_a", "max", 4, (1, 2, 3), None, 8, None, keep_map=True, opset=17),
    )


def test_in_graph_image_mode_equals_brute_force_with_ties(world: dict) -> None:
    """Each channel's per-image maximum at its FIRST row-major position; ties -> earlier image."""
    k = 6
    engine = _scan(world, ReduceOptions(k=k, bottom=True), True, True, layers=["coarse", "nhwc"])
    maps = layer_outputs(world["proto"], ["coarse", "nhwc"], world["inputs"])
    maps["nhwc"] = maps["nhwc"].transpose(0, 3, 1, 2)
    for layer, values in maps.items():
        n, c, _, w = values.shape
        for channel in range(c):
            flat = values[:, channel].reshape(n, -1)
            assert (flat[5] == flat[5].max()).sum() > 1  # the constant image: its max is tied
            best = [int(np.flatnonzero(row == row.max())[0]) for row in flat]
            score = [float(row.max()) for row in flat]
            for bottom in (False, True):
                order = sorted(range(n), key=lambda i: (score[i] if bottom else -score[i], i))
                expected = [(i, best[i] // w, best[i] % w, score[i]) for i in order[:k]]
                got = engine.reducers[layer].entries(channel, "bottom" if bottom else "top")
                assert [(e.image, e.y, e.x, e.score) for e in got] == expected


@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_uint8_feed_normalised_in_graph_equals_host_normalisation(
    world: dict, tmp_path: Path, order: str
) -> None:
    from maxact.server.data.preprocess import ResolvedPreprocessing
    from maxact.server.data.reader import file_source
    from tests.scan.helpers import write_random_images

    ids = write_random_images(tmp_path, 20, SIZE)
    model = world["model"]
    prep = ResolvedPreprocessing(
        (SIZE, SIZE),
        None,
        None,
        1 / 255,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        order,
        "nchw",
    )
    layers = [model.layer(prep.input_size, name) for name in ("conv_a", "nhwc", "logits")]
    options = ReduceOptions(k=4, bottom=True, position=True)
    states = []
    for in_graph, io_binding, uint8_feed in [
        (False, False, False),
        (True, True, True),
        (False, False, True),
    ]:
        engine = ScanEngine(
            model,
            layers,
            prep,
            options,
            batch_size=8,
            in_graph=in_graph,
            io_binding=io_binding,
            uint8_feed=uint8_feed,
        )
        sources = [file_source(i, image_id, tmp_path / image_id) for i, image_id in enumerate(ids)]
        assert engine.run(sources).images_scanned == len(ids)
        input_type = engine.session.get_inputs()[0].type
        assert input_type == ("tensor(uint8)" if uint8_feed else "tensor(float)")
        states.append(_states(engine))
    _assert_equal_states(states[1], states[0])
    _assert_equal_states(states[2], states[0])


def test_a_map_holding_nan_is_ranked_as_numpy_ranks_it(world: dict) -> None:
    """onnxruntime's ArgMax passes over a NaN that is not first in the map, numpy's picks it:
    batches with a NaN are reduced on the host, so both paths keep numpy's answer."""
    poisoned = dict(world, inputs=world["inputs"].copy())
    poisoned["inputs"][9, :, 12, 15] = np.nan  # mid-map: not the first unit of any map
    poisoned["inputs"][30, 1, 3, 3] = np.nan
    options = ReduceOptions(k=5, bottom=True)
    reference = _scan(poisoned, options, in_graph=False, io_binding=False)
    flat = layer_outputs(poisoned["proto"], ["conv_a"], poisoned["inputs"][8:16])["conv_a"]
    assert np.isnan(flat[1]).any() and not np.isnan(flat[1].reshape(8, -1)[:, 0]).all()
    for in_graph, io_binding in CONFIGS:
        got = _scan(poisoned, options, in_graph, io_binding)
        _assert_equal_states(_states(got), _states(reference))


def test_cpu_default_reduces_large_maps_on_the_host_and_small_ones_in_the_graph(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """conv_a is [8, 24, 24] per image (4608 values), coarse (after a pool and a stride-2 conv)
    far smaller: with the bound between them the default plan mixes both ways, and answers as
    the numpy path does."""
    from maxact.server.scan import engine as engine_module

    monkeypatch.setattr(engine_module, "HOST_REDUCE_ABOVE", 3000)
    options = ReduceOptions(k=5, bottom=True)
    layers = ["conv_a", "coarse", "logits"]
    mixed = _scan(world, options, None, None, layers=layers)  # type: ignore[arg-type]
    assert [r.kind for r in mixed.reductions] == ["host", "max", "flat"]
    reference = _scan(world, options, False, False, layers=layers)
    _assert_equal_states(_states(mixed), _states(reference))
