"""Server paths never escape their roots: no `..`, no absolute names, no symlink escape, and no
ONNX external data read from outside the model's folder (docs/contracts.md, "Names")."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx.external_data_helper import convert_model_to_external_data
from PIL import Image

from maxact.client import Client
from tests.errors import raised
from tests.onnx_models import bright_square_model, save


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def external_data_model(folder: Path, location: str) -> Path:
    """net.onnx in `folder` whose weights are external data at `location` (relative to folder)."""
    model = bright_square_model(64)
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0
    )
    for tensor in model.graph.initializer:
        tensor.ClearField("raw_data")  # the data "lives" at `location`, which onnx would refuse
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path = folder / "net.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    "name", ["../escaped", "/tmp/escaped", "a/../../escaped", "a\\..\\escaped", ".hidden", "a/./b"]
)
def test_upload_names_escaping_the_root_are_invalid_name(
    client: Client, model_root: Path, net_file: Path, name: str
) -> None:
    error = raised(lambda: client.upload_model(net_file, name))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME")
    assert files_under(model_root.parent / "models") == []
    assert not (model_root.parent / "escaped.onnx").exists()


def test_upload_through_a_symlinked_folder_leading_outside_is_refused(
    client: Client, model_root: Path, net_file: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (model_root / "link").symlink_to(outside, target_is_directory=True)
    error = raised(lambda: client.upload_model(net_file, "link/net"))
    assert error.reason == "INVALID_NAME"
    assert files_under(outside) == []


def test_a_model_symlink_leading_outside_the_root_is_refused_and_not_listed(
    client: Client, model_root: Path, tmp_path: Path
) -> None:
    outside = save(bright_square_model(64), tmp_path / "outside", "secret")
    (model_root / "evil.onnx").symlink_to(outside)
    assert client.list_models() == []
    error = raised(lambda: client.get_model("evil"))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME")
    assert raised(lambda: client.load_model("evil")).reason == "INVALID_NAME"


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname"])
def test_an_upload_whose_external_data_lies_outside_its_folder_is_refused(
    client: Client, model_root: Path, tmp_path: Path, location: str
) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\x00" * 4096)
    path = external_data_model(tmp_path / "build", location)
    error = raised(lambda: client.upload_model(path, "net"))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MODEL_INVALID")
    assert "outside the model's folder" in error.message
    assert files_under(model_root) == []


def test_a_stored_model_whose_external_data_lies_outside_its_folder_is_not_loaded(
    client: Client, model_root: Path
) -> None:
    (model_root / "outside.bin").write_bytes(b"\x00" * 4096)  # inside the root, outside the folder
    external_data_model(model_root / "team", "../outside.bin")
    error = raised(lambda: client.load_model("team/net"))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_INVALID")
    assert "outside the model's folder" in error.message
    assert not client.list_models()[0].loaded


def test_external_data_inside_the_folder_loads(client: Client, model_root: Path) -> None:
    model = bright_square_model(64)
    convert_model_to_external_data(model, location="net.weights", size_threshold=0)
    onnx.save_model(model, str(model_root / "net.onnx"))
    assert (model_root / "net.weights").is_file()
    assert client.load_model("net").loaded
    assert client.get_model("net").input_height == 64


def test_dataset_symlinks_leading_outside_the_data_root_are_not_read(
    client: Client, data_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside_images"
    outside.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside / "private.png")
    (data_root / "linked").symlink_to(outside, target_is_directory=True)
    assert raised(lambda: client.get_dataset("linked")).reason == "INVALID_NAME"
    (data_root / "ds").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data_root / "ds" / "own.png")
    os.symlink(outside / "private.png", data_root / "ds" / "stolen.png")
    assert client.get_dataset("ds").image_count == 1
