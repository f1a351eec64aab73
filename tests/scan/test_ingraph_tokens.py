"""Token tensors reduced in the graph equal the numpy path (which the ViT brute-force tests
check): grid tokens laid out [N, C, tokens] with the prefix dropped, for [N, T, C] and
[N, C, T] layouts, every channel and a channel subset, with and without IO binding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxact.server.scan.engine import ScanEngine
from maxact.server.scan.layer import ReduceOptions
from tests.scan.helpers import batches_of, load, prep_for
from tests.vit_models import tiny_vit

SIZE = 32
IMAGES = 29
LAYERS = ["patch_flat", "embedded", "block0.mlp", "final_ln"]  # [N, C, T] and [N, 1 + T, C]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root: Path = tmp_path_factory.mktemp("ingraph_tokens")
    model = load(tiny_vit(size=(SIZE, SIZE), patch=4, heads=2, prefix=2), root, "vit")
    rng = np.random.default_rng(1)
    inputs = rng.normal(0, 1, (IMAGES, 3, SIZE, SIZE)).astype(np.float32)
    inputs[3] = 0.0  # constant maps: ties everywhere
    return {"model": model, "inputs": inputs, "labels": rng.integers(-1, 3, IMAGES)}


def _states(world: dict, in_graph: bool, io_binding: bool, **kw: object) -> tuple[dict, dict]:
    model = world["model"]
    prep = prep_for(model, SIZE)
    engine = ScanEngine(
        model,
        [model.layer(prep.input_size, name) for name in LAYERS],
        prep,
        ReduceOptions(k=4, bottom=True, position=True),
        classes=("a", "b", "c"),
        batch_size=8,
        in_graph=in_graph,
        io_binding=io_binding,
        **kw,  # type: ignore[arg-type]
    )
    engine.run_batches(batches_of(world["inputs"], 8), IMAGES, world["labels"])
    kinds = {r.tensor: r.kind for r in engine.reductions}
    return kinds, {name: r.state_dict() for name, r in engine.reducers.items()}


@pytest.mark.parametrize("channels", [None, {"patch_flat": (5, 0), "block0.mlp": (9, 2, 15)}])
def test_token_reductions_in_the_graph_equal_the_numpy_path(world: dict, channels) -> None:
    kw = {} if channels is None else {"channels": channels}
    _, reference = _states(world, False, False, **kw)
    for io_binding in (False, True):
        kinds, got = _states(world, True, io_binding, **kw)
        assert set(kinds.values()) == {"max"}
        for layer in reference:
            for key in reference[layer]:
                np.testing.assert_array_equal(
                    got[layer][key], reference[layer][key], err_msg=f"{layer} {key}"
                )
