"""Model upload (client streaming), load and unload, through the real server and client.

What matters: a large model arrives intact, a bad upload never leaves a file under the model
root (not even half of one), and an existing model is only replaced when asked.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maxact.client import Client, MaxactError
from maxact.client.cli.main import main as cli_main
from maxact.v1 import model_service_pb2, model_service_pb2_grpc
from tests.errors import raised, raw_channel, raw_error
from tests.onnx_models import bright_square_model, finish

MIB = 1024 * 1024


def _header(name: str, sha256: str) -> model_service_pb2.UploadModelRequest:
    """The first message of an upload stream."""
    return model_service_pb2.UploadModelRequest(
        header=model_service_pb2.UploadModelHeader(name=name, sha256=sha256)
    )


def big_conv_model(side: int = 90, channels: int = 1030) -> onnx.ModelProto:
    """One Conv whose kernel covers the whole input: channels*3*side*side float32 weights
    (just over 100 MB by default), all used, so the model is real and loadable, not padding."""
    weights = np.random.default_rng(0).standard_normal((channels, 3, side, side), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["conv"])],
        "big_conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("conv", TensorProto.FLOAT, ["N", channels, 1, 1])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    return finish(graph)


def leftovers(root: Path) -> list[str]:
    """Every file under the root, hidden temp files included."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _upload_error(
    client: Client, first: model_service_pb2.UploadModelRequest, data: bytes
) -> MaxactError:
    """The error of a raw upload stream: the message `first` (a header), then `data` as one
    chunk."""
    stub = model_service_pb2_grpc.ModelServiceStub(raw_channel(client))
    requests = iter([first, model_service_pb2.UploadModelRequest(chunk=data)])
    return raw_error(lambda: stub.UploadModel(requests, timeout=60))


def test_a_100_mb_model_uploads_in_chunks_loads_and_describes(
    client: Client, model_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "big.onnx"
    onnx.save(big_conv_model(), str(path))
    size = path.stat().st_size
    assert size >= 100_000_000

    summary = client.upload_model(path, "team/big")

    assert (summary.name, summary.size_bytes) == ("team/big", size)
    stored = model_root / "team" / "big.onnx"
    assert (
        hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    )
    assert leftovers(model_root) == ["team/big.onnx"]
    assert client.load_model("team/big").loaded
    conv = {layer.name: layer for layer in client.get_model("team/big").layers}["conv"]
    assert conv.shape == (1030, 1, 1)
    assert conv.receptive_field is not None


def test_upload_with_a_wrong_checksum_is_refused_and_leaves_no_file(
    client: Client, model_root: Path, net_file: Path
) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(raw_channel(client))
    data = net_file.read_bytes()
    requests = [
        _header(name="net", sha256=hashlib.sha256(data).hexdigest()),
        model_service_pb2.UploadModelRequest(chunk=data[:-10]),  # truncated
    ]
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadModel(iter(requests))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated or corrupted" in (caught.value.details() or "")
    corrupted = bytearray(data)
    corrupted[100] ^= 0xFF  # same length, one flipped byte
    requests = [
        _header(name="net", sha256=hashlib.sha256(data).hexdigest()),
        model_service_pb2.UploadModelRequest(chunk=bytes(corrupted)),
    ]
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadModel(iter(requests))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert leftovers(model_root) == []
    assert client.list_models() == []


def test_checksum_mismatch_reason_reaches_the_client(
    client: Client, model_root: Path, net_file: Path
) -> None:
    error = _upload_error(client, _header(name="net", sha256="0" * 64), net_file.read_bytes())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "CHECKSUM_MISMATCH"
    assert leftovers(model_root) == []


def test_upload_cancelled_mid_stream_leaves_no_file(
    client: Client, model_root: Path, net_file: Path
) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(raw_channel(client))
    release = threading.Event()

    def requests():  # type: ignore[no-untyped-def]
        yield _header(name="half", sha256="a" * 64)
        for _ in range(3):
            yield model_service_pb2.UploadModelRequest(chunk=b"\x00" * MIB)
        release.wait(30)  # the stream stalls mid-way until the client cancels

    future = stub.UploadModel.future(requests())
    deadline = time.monotonic() + 20
    while not any(".part" in name for name in leftovers(model_root)):
        assert time.monotonic() < deadline, "the server never started writing the upload"
        time.sleep(0.02)
    future.cancel()
    release.set()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    deadline = time.monotonic() + 20
    while leftovers(model_root):
        assert time.monotonic() < deadline, f"left behind: {leftovers(model_root)}"
        time.sleep(0.02)
    assert client.list_models() == []


def test_bytes_that_are_not_onnx_are_model_invalid_and_removed(
    client: Client, model_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not an onnx model at all\x00\xff" * 100)
    error = raised(lambda: client.upload_model(path))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "MODEL_INVALID"
    assert "junk" in error.message
    assert leftovers(model_root) == []


def test_upload_over_the_size_limit_is_resource_exhausted_and_leaves_no_file(
    model_root: Path, tmp_path: Path
) -> None:
    from maxact.server.app import start_server

    path = tmp_path / "big.onnx"
    onnx.save(big_conv_model(side=40, channels=200), str(path))  # ~3.8 MB
    running = start_server(model_root, port=0, device="cpu", max_upload_mb=1)
    with running, Client(running.address, timeout=60) as client:
        error = raised(lambda: client.upload_model(path))
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.reason == "UPLOAD_TOO_LARGE"
        assert "1 MiB" in error.message
        assert leftovers(model_root) == []


def test_existing_name_is_already_exists_unless_overwrite_which_reloads_it(
    client: Client, model_root: Path, net_file: Path
) -> None:
    client.upload_model(net_file, "net")
    assert client.get_model("net").input_height == 64
    error = raised(lambda: client.upload_model(net_file, "net"))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "MODEL_EXISTS"

    smaller = net_file.with_name("small.onnx")
    onnx.save(bright_square_model(32), str(smaller))
    summary = client.upload_model(smaller, "net", overwrite=True)
    assert summary.size_bytes == smaller.stat().st_size
    assert client.get_model("net").input_height == 32  # the cached 64-pixel model was dropped
    assert leftovers(model_root) == ["net.onnx"]


def test_preprocess_json_is_stored_as_sidecar_and_becomes_the_default(
    client: Client, model_root: Path, net_file: Path
) -> None:
    prep = {"scale": 0.5, "mean": [1, 2, 3], "channel_order": "bgr"}
    client.upload_model(net_file, "vision/net", preprocess_json=json.dumps(prep))
    assert json.loads((model_root / "vision" / "net.preprocess.json").read_text()) == prep
    default = client.get_model("vision/net").default_preprocessing
    assert (default.scale, default.mean, default.channel_order) == (0.5, (1, 2, 3), "bgr")


def test_invalid_preprocess_json_is_refused_before_any_byte_is_stored(
    client: Client, model_root: Path, net_file: Path
) -> None:
    # a typo never leaves the client: the header carries a Preprocessing message
    with pytest.raises(ValueError, match="sise"):
        client.upload_model(net_file, preprocess_json='{"sise": [1, 2]}')
    # a value the message can carry but the server refuses: nothing is stored either
    data = net_file.read_bytes()
    header = model_service_pb2.UploadModelHeader(
        name="net", sha256=hashlib.sha256(data).hexdigest()
    )
    header.preprocessing.size.extend([1])  # [height, width] needs two values
    error = _upload_error(client, model_service_pb2.UploadModelRequest(header=header), data)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_PREPROCESSING"
    assert "size" in error.message
    assert leftovers(model_root) == []


def test_an_upload_that_does_not_start_with_its_header_is_refused(
    client: Client, model_root: Path, net_file: Path
) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(raw_channel(client))
    data = net_file.read_bytes()
    error = raw_error(
        lambda: stub.UploadModel(
            iter([model_service_pb2.UploadModelRequest(chunk=data)]), timeout=60
        )
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UPLOAD_HEADER_REQUIRED",
    )
    header = model_service_pb2.UploadModelHeader(
        name="net", sha256=hashlib.sha256(data).hexdigest()
    )
    twice = [model_service_pb2.UploadModelRequest(header=header)] * 2
    error = raw_error(lambda: stub.UploadModel(iter(twice), timeout=60))
    assert error.reason == "UPLOAD_HEADER_REPEATED"
    assert leftovers(model_root) == []


def test_load_and_unload_toggle_the_loaded_flag_and_check_the_name(
    client: Client, model_root: Path, net_file: Path
) -> None:
    client.upload_model(net_file)
    assert [(m.name, m.loaded) for m in client.list_models()] == [("net", False)]
    assert client.load_model("net").loaded
    assert [(m.name, m.loaded) for m in client.list_models()] == [("net", True)]
    client.unload_model("net")
    assert [(m.name, m.loaded) for m in client.list_models()] == [("net", False)]
    assert raised(lambda: client.unload_model("nope")).code == grpc.StatusCode.NOT_FOUND
    assert raised(lambda: client.load_model("nope")).reason == "MODEL_NOT_FOUND"
    (model_root / "broken.onnx").write_bytes(b"not onnx")
    error = raised(lambda: client.load_model("broken"))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_INVALID")


def test_cli_upload_prints_one_json_document(
    server: object, model_root: Path, net_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = server.address  # type: ignore[attr-defined]
    argv = ["--server", address, "upload", str(net_file), "--name", "cli/net", "--json"]
    assert cli_main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"name": "cli/net", "size_bytes": net_file.stat().st_size, "loaded": False}
    assert cli_main(["--server", address, "upload", str(net_file), "--name", "cli/net"]) == 1
    assert "ALREADY_EXISTS" in capsys.readouterr().err
    assert cli_main(["--server", address, "upload", str(net_file), "--overwrite"]) == 0
    assert "uploaded net" in capsys.readouterr().out
