"""Preprocessing defaults and mistakes: sidecars re-read when they change, a warning on built-in
defaults, scalar and non-finite sidecar values, a wrong layout and a misspelt layer name, each
answered with an error that names the real cause, through the real server and CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client import Client, Preprocessing
from maxact.client.cli.main import main
from tests.errors import raised
from tests.onnx_models import bright_square_model, finish, save


@pytest.fixture
def squares(model_root: Path, data_root: Path) -> Path:
    save(bright_square_model(64), model_root, "net")
    folder = data_root / "squares"
    folder.mkdir()
    for i in range(3):
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        pixels[8 * i : 8 * i + 4, 20:24] = 200 + 20 * i
        Image.fromarray(pixels).save(folder / f"img_{i}.png")
    return model_root / "net.preprocess.json"


def _write_sidecar(path: Path, document: dict) -> None:
    """Write a sidecar and move its mtime on, so a rewrite within one clock tick is seen."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(json.dumps(document), encoding="utf-8")
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_sidecar_changes_are_seen_without_unloading_and_defaults_warn(
    client: Client, squares: Path
) -> None:
    first = client.topk("net", "conv1", 0, dataset="squares", k=1).result()
    assert "no net.preprocess.json sidecar" in first.preprocessing_warning
    assert first.preprocessing is not None and first.preprocessing.scale == pytest.approx(1 / 255)
    _write_sidecar(squares, {"scale": 0.5, "mean": 0.25})
    second = client.topk("net", "conv1", 0, dataset="squares", k=1).result()
    assert second.preprocessing_warning == ""
    assert second.preprocessing is not None
    assert (second.preprocessing.scale, second.preprocessing.mean) == (0.5, (0.25, 0.25, 0.25))
    assert second.hits[0].score == pytest.approx(240 * 0.5 - 0.25)  # a window inside the square
    _write_sidecar(squares, {"scale": 0.25})
    third = client.topk("net", "conv1", 0, dataset="squares", k=1).result()
    assert third.preprocessing is not None and third.preprocessing.scale == 0.25
    assert client.get_model("net").default_preprocessing == Preprocessing(scale=0.25)


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ('{"std": NaN}', "'std'"),
        ('{"scale": Infinity}', "'scale'"),
        ('{"mean": "grey"}', "'mean'"),
        ('{"mean": [1, 2]}', "'mean'"),
    ],
)
def test_bad_sidecar_value_is_a_clear_error_naming_the_file_and_field(
    client: Client, squares: Path, document: str, named: str
) -> None:
    squares.write_text(document, encoding="utf-8")
    error = raised(lambda: client.topk("net", "conv1", 0, dataset="squares").result())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_PREPROCESSING"
    assert "net.preprocess.json" in error.message and named in error.message
    assert "not iterable" not in error.message


def test_wrong_layout_is_invalid_argument_naming_the_layout_the_model_takes(
    client: Client, squares: Path
) -> None:
    prep = Preprocessing(layout="nhwc")
    error = raised(
        lambda: client.topk("net", "conv1", 0, dataset="squares", preprocessing=prep).result()
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_LAYOUT"
    assert "'nhwc'" in error.message and "[N, 3, 64, 64]" in error.message
    assert "--layout nchw" in error.message


def test_misspelt_layer_gets_the_close_match_and_a_layers_command_that_works(
    client: Client, model_root: Path, data_root: Path
) -> None:
    weights = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros((1, 2, 1, 1), np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w"], ["conv:0"], kernel_shape=[3, 3]),
            helper.make_node("Add", ["conv:0", "b"], ["Add_6:0"]),
        ],
        "tf_names",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("Add_6:0", TensorProto.FLOAT, ["N", 2, "h", "w"])],
        [weights, bias],
    )
    onnx.save(finish(graph), str(model_root / "tf.onnx"))
    error = raised(lambda: client.receptive_field("tf", "Add_6", size=(32, 32)))
    assert error.reason == "LAYER_NOT_FOUND"
    assert "did you mean 'Add_6:0'" in error.message
    assert "`maxact layers tf --size 32 32`" in error.message  # dynamic H/W: with --size


def test_cli_takes_the_detector_flags_shows_the_preprocessing_and_warns_on_stderr(
    server: object, squares: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--server", server.address, "topk", "net", "conv1", "--channel", "0"]  # type: ignore[attr-defined]
    argv += ["--dataset", "squares", "-k", "1", "--json", "--letterbox", "64", "64"]
    argv += ["--pad-value", "0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["preprocessing"]["letterbox"] == [64, 64]
    assert document["preprocessing"]["pad_value"] == 0
    assert "maxact: warning: model 'net' has no net.preprocess.json sidecar" in captured.err
    assert main([*argv[:-5], "--resize-shorter", "64", "--size-multiple", "32"]) == 1
    assert "size_multiple" in capsys.readouterr().err  # the model's input is fixed at 64x64
