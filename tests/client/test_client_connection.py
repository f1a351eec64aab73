"""Client against the real in-process server: where it connects, typed unary answers, errors
(code, reason, message), and the CLI's text output."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import code_pb2
from PIL import Image

from maxact.client import Client, MaxactError, Preprocessing
from maxact.client.cli import main as cli
from tests.onnx_models import random_cnn, save


@pytest.fixture
def zoo(model_root: Path, data_root: Path) -> Path:
    """Model "zoo/cnn" (random_cnn, 32x32) with a sidecar default preprocessing; dataset
    "dots" of three images."""
    save(random_cnn(size=32), model_root, "zoo/cnn")
    sidecar = {"scale": 0.5, "mean": [1, 2, 3], "channel_order": "bgr"}
    (model_root / "zoo" / "cnn.preprocess.json").write_text(json.dumps(sidecar))
    dataset = data_root / "dots"
    dataset.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(dataset / f"dot_{i}.png")
    return dataset


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_client_without_address_talks_to_the_server_named_by_maxact_server(
    server: object, zoo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAXACT_SERVER", server.address)  # type: ignore[attr-defined]
    with Client() as client:
        assert client.server == server.address  # type: ignore[attr-defined]
        assert [m.name for m in client.list_models()] == ["zoo/cnn"]
    elsewhere = f"127.0.0.1:{_closed_port()}"  # an explicit address wins over the environment
    with Client(elsewhere, timeout=5) as explicit, pytest.raises(MaxactError) as caught:
        explicit.list_models()
    assert elsewhere in str(caught.value)


def test_cli_without_server_flag_uses_maxact_server(
    server: object, zoo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MAXACT_SERVER", server.address)  # type: ignore[attr-defined]
    assert cli.main(["models", "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)["models"]] == ["zoo/cnn"]


def test_unreachable_server_error_names_the_address_for_calls_and_streams() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    with Client(address, timeout=5) as client:
        with pytest.raises(MaxactError) as unary:
            client.list_models()
        with pytest.raises(MaxactError) as streamed:
            client.topk("m", "l", 0, dataset="d").result()
    for error in (unary.value, streamed.value):
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.reason == ""  # no server, no ErrorInfo
        assert str(error).startswith(f"UNAVAILABLE: cannot reach the maxact server at {address}")


def test_error_str_shows_code_reason_and_server_message(client: Client, zoo: Path) -> None:
    with pytest.raises(MaxactError) as caught:
        client.get_model("zoo/missing")
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")
    assert "zoo/missing" in error.message
    assert str(error) == f"NOT_FOUND (MODEL_NOT_FOUND): {error.message}"


def test_get_model_returns_typed_inputs_layers_and_sidecar_default_preprocessing(
    client: Client, zoo: Path
) -> None:
    info = client.get_model("zoo/cnn")
    assert info.default_preprocessing == Preprocessing(
        scale=0.5, mean=(1.0, 2.0, 3.0), channel_order="bgr"
    )
    (image_input,) = info.inputs
    assert (image_input.name, image_input.element_type) == ("input", "float")
    assert image_input.shape[1:] == (3, 32, 32)
    assert (info.input_height, info.input_width) == (32, 32)
    # conv_a 3x3 p1 -> pool 2/2 -> conv_b 3x3 s2 p1: size 8, stride 4, padding 3
    conv_b = info.layer("conv_b")
    assert (conv_b.op, conv_b.shape) == ("Conv", (6, 8, 8))
    geometry = conv_b.receptive_field.geometry  # type: ignore[union-attr]
    assert (geometry.size, geometry.stride, geometry.padding) == ((8, 8), (4, 4), (3, 3))
    logits = info.layer("logits")
    assert logits.shape == (4,) and logits.global_context
    assert logits.receptive_field is not None and not logits.receptive_field.spatial
    with pytest.raises(KeyError, match="nope"):
        info.layer("nope")


def test_cli_text_output_of_models_layers_rf_and_topk(
    server: object, zoo: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["--server", server.address]  # type: ignore[attr-defined]
    assert cli.main([*base, "models"]) == 0
    assert "zoo/cnn" in capsys.readouterr().out
    assert cli.main([*base, "layers", "zoo/cnn"]) == 0
    layers = capsys.readouterr().out
    assert "input 32x32" in layers
    assert any(
        line.split()[:2] == ["conv_b", "Conv"] and "8x8 / 4x4 / 3x3" in line
        for line in layers.splitlines()
    ), layers
    assert cli.main([*base, "rf", "zoo/cnn", "conv_b", "--unit", "0", "0"]) == 0
    assert "rows 0..5  cols 0..5" in capsys.readouterr().out  # exact box of unit (0, 0)
    argv = [*base, "topk", "zoo/cnn", "conv_b", "--channel", "1", "-k", "2", "--dataset", "dots"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("top-2 of zoo/cnn conv_b channel 1 (image mode, 3 images)")
    assert sum(line.startswith("#") for line in out.splitlines()) == 2


def test_code_pb2_values_match_grpc_status_codes() -> None:
    # the rich status carries the numeric code; the conversion relies on them agreeing
    for code in grpc.StatusCode:
        assert code.value[0] == getattr(code_pb2, code.name)
