"""Models exported with a fixed batch of 1 still scan in batches when the graph allows it, and
fall back to one image per run when it hard-codes the batch (Reshape to [1, -1])."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maxact.server.scan.layer import ReduceOptions
from tests.onnx_models import layer_outputs, random_cnn
from tests.scan.helpers import (
    engine,
    load,
    oracle_inputs,
    sources,
    write_random_images,
)

SIZE = 32


def fixed_batch_one(model: onnx.ModelProto, flatten_to_one: bool) -> onnx.ModelProto:
    """The random CNN with batch 1 in its signature; optionally a Reshape to [1, -1] on conv_a."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    if flatten_to_one:
        graph.initializer.append(numpy_helper.from_array(np.array([1, -1], np.int64), "one_row"))
        graph.node.append(helper.make_node("Reshape", ["conv_a", "one_row"], ["flat_a"]))
        graph.output.append(
            helper.make_tensor_value_info("flat_a", TensorProto.FLOAT, [1, 8 * SIZE * SIZE])
        )
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].Clear()
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.checker.check_model(copy)
    return copy


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("batch_one")
    data = root / "data"
    ids = write_random_images(data, 40, SIZE, seed=2)
    base = random_cnn(seed=6, size=SIZE)
    outputs = layer_outputs(base, ["conv_a", "logits"], oracle_inputs(data, ids))
    return {"root": root, "data": data, "ids": ids, "outputs": outputs}


def _top(values: np.ndarray, channel: int, k: int) -> list[int]:
    scores = values[:, channel].reshape(len(values), -1).max(axis=1)
    return sorted(range(len(values)), key=lambda i: (-scores[i], i))[:k]


def test_batch_one_model_is_made_batchable_and_scans_in_batches(world: dict) -> None:
    model = load(fixed_batch_one(random_cnn(seed=6, size=SIZE), False), world["root"], "b1")
    assert model.input.fixed_batch == 1
    scan = engine(model, ["conv_a", "logits"], SIZE, ReduceOptions(k=5), batch_size=16)
    assert scan.batch_size == 16 and scan.fixed_batch is None
    scan.run(sources(world["data"], world["ids"]))
    for layer in ("conv_a", "logits"):
        got = [e.image for e in scan.reducers[layer].entries(1)]
        assert got == _top(world["outputs"][layer], 1, 5)


def test_hard_coded_batch_falls_back_to_one_image_per_run(world: dict, tmp_path: Path) -> None:
    model = load(fixed_batch_one(random_cnn(seed=6, size=SIZE), True), tmp_path, "reshaped")
    flat = engine(model, ["flat_a"], SIZE, ReduceOptions(k=4))
    assert flat.fixed_batch == 1 and flat.batch_size == 1
    flat.run(sources(world["data"], world["ids"]))
    conv_a = world["outputs"]["conv_a"].reshape(len(world["ids"]), -1)
    got = [e.image for e in flat.reducers["flat_a"].entries(100)]
    assert got == sorted(range(len(conv_a)), key=lambda i: (-conv_a[i, 100], i))[:4]
    # the same model batches fine for a tensor before the Reshape
    before = engine(model, ["conv_a"], SIZE, ReduceOptions(k=4))
    assert before.fixed_batch is None
