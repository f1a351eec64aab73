"""Bad input gets the right status code, a reason, and a message naming the culprit; the server
keeps serving afterwards."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from PIL import Image

from maxact.client import Client
from tests.errors import raised
from tests.onnx_models import bright_square_model, save


@pytest.fixture
def world(model_root: Path, data_root: Path) -> Path:
    save(bright_square_model(64), model_root, "net")
    (model_root / "broken.onnx").write_bytes(b"this is not an onnx model at all\x00\xff")
    dataset = data_root / "mixed"
    dataset.mkdir()
    for i in range(5):
        pixels = np.full((64, 64, 3), 20 * i, dtype=np.uint8)
        Image.fromarray(pixels).save(dataset / f"ok_{i}.png")
    (dataset / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated garbage")
    return dataset


def test_unknown_model_is_not_found_and_named(client: Client, world: Path) -> None:
    error = raised(lambda: client.get_model("no/such/model"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "MODEL_NOT_FOUND"
    assert "no/such/model" in error.message
    assert [m.name for m in client.list_models()] == ["broken", "net"]


def test_unknown_layer_is_invalid_argument_and_named(client: Client, world: Path) -> None:
    error = raised(lambda: client.topk("net", "conv9", 0, dataset="mixed").result())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "LAYER_NOT_FOUND"
    assert "conv9" in error.message
    error = raised(lambda: client.receptive_field("net", "nope"))
    assert error.reason == "LAYER_NOT_FOUND"


def test_channel_out_of_range_names_the_valid_range(client: Client, world: Path) -> None:
    error = raised(lambda: client.topk("net", "conv1", 2, dataset="mixed").result())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "CHANNEL_OUT_OF_RANGE"
    assert "0..1" in error.message and "conv1" in error.message


def test_unreadable_image_is_reported_and_skipped_and_the_scan_completes(
    client: Client, world: Path
) -> None:
    result = client.topk("net", "conv1", 0, dataset="mixed", k=3).result()
    assert [s.image for s in result.skipped] == ["corrupt.jpg"]
    assert "cannot read image" in result.skipped[0].reason
    assert result.images_scanned == 5
    assert result.images_failed == 1
    assert [h.image for h in result.hits] == ["ok_4.png", "ok_3.png", "ok_2.png"]


def test_file_that_is_not_onnx_is_failed_precondition(client: Client, world: Path) -> None:
    error = raised(lambda: client.get_model("broken"))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "MODEL_INVALID"
    assert "broken" in error.message
    assert client.get_model("net").name == "net"


def test_unknown_dataset_is_not_found(client: Client, world: Path) -> None:
    error = raised(lambda: client.topk("net", "conv1", 0, dataset="nope").result())
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "DATASET_NOT_FOUND"


def test_names_escaping_the_root_are_refused(client: Client, world: Path) -> None:
    error = raised(lambda: client.get_model("../models/net"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_NAME"
    error = raised(lambda: client.topk("net", "conv1", 0, dataset="..").result())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


def test_wrong_preprocessing_size_for_a_fixed_model_is_invalid(client: Client, world: Path) -> None:
    from maxact.client import Preprocessing

    error = raised(
        lambda: client.topk(
            "net", "conv1", 0, dataset="mixed", preprocessing=Preprocessing(size=(32, 32))
        ).result()
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_PREPROCESSING"
    assert "[64, 64]" in error.message


def test_a_model_onnxruntime_loads_but_cannot_run_is_failed_precondition_not_internal(
    client: Client, world: Path, model_root: Path
) -> None:
    """Found by `make fuzz`: a Conv whose kernel_shape attribute contradicts its weights loads
    and fails only when run; that is the model's fault, said as MODEL_INVALID."""
    model = bright_square_model(64)
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    for attribute in conv.attribute:
        if attribute.name == "kernel_shape":
            attribute.ints[:] = [1, attribute.ints[1]]
    onnx.save(model, model_root / "lying.onnx")
    error = raised(lambda: client.topk("lying", "conv1", 0, dataset="mixed").result())
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "MODEL_INVALID"
    assert "lying" in error.message and "onnxruntime cannot run it" in error.message
    assert len(client.topk("net", "conv1", 0, dataset="mixed", k=2).result().patches) == 2
