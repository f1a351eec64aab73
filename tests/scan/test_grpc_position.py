"""End to end through the real gRPC server: the StreamTopK RPC, now driven by the scan engine,
returns position-mode top-k (per-image cap, RF-overlap suppression) equal to the oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxact.client import Client, Preprocessing
from maxact.server.models.registry import ModelRegistry
from tests.onnx_models import layer_outputs, random_cnn, save
from tests.scan.helpers import (
    oracle_inputs,
    oracle_position_mode,
    write_random_images,
)

SIZE = 32


@pytest.mark.parametrize("bottom", [False, True])
def test_stream_topk_position_mode_equals_oracle(
    client: Client, model_root: Path, data_root: Path, bottom: bool
) -> None:
    proto = random_cnn(seed=8, size=SIZE)
    save(proto, model_root, "random")
    photos = data_root / "photos"
    ids = write_random_images(photos, 200, SIZE, seed=3)
    values = layer_outputs(proto, ["relu_b"], oracle_inputs(photos, ids))["relu_b"]
    field = ModelRegistry(model_root, "cpu").get("random").layer((SIZE, SIZE), "relu_b").field
    expected = oracle_position_mode(field, values, 2, 8, bottom, cap=2)

    result = client.topk(
        "random",
        "relu_b",
        2,
        dataset="photos",
        k=8,
        mode="position",
        per_image_cap=2,
        bottom=bottom,
        preprocessing=Preprocessing(size=(SIZE, SIZE)),
    ).result()
    assert result.images_scanned == 200
    assert [(h.image, h.unit) for h in result.hits] == [(ids[e[0]], e[1:3]) for e in expected]
    assert [h.score for h in result.hits] == pytest.approx([e[3] for e in expected], rel=1e-5)
    assert len(result.patches) == 8
