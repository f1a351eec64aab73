"""The client's fault is never INTERNAL (reproductions 5, 6 and 7): names go through one
validation layer before the file system, errors echo a bounded part of what they name and no
server path, undecodable messages are INVALID_ARGUMENT without a traceback, and models the scan
cannot feed are refused when loaded."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import onnx
import pytest
from onnx import TensorProto, helper

from maxact.client import Client
from maxact.v1 import (
    model_service_pb2,
    model_service_pb2_grpc,
    scan_service_pb2,
    topk_service_pb2,
)
from tests.onnx_models import bright_square_model, save
from tests.security.robust_helpers import assert_no_server_path, dynamic_model, png_bytes, refused

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "name",
    [
        "a\x00b",  # NUL: "embedded null byte" was INTERNAL
        "a" * 300,  # a component over 255 bytes: "File name too long" with the server path
        "x/" * 2000 + "y",  # 2000 components: recursion depth
        "dir/",  # trailing '/'
        ".hidden",
        "a/../b",
    ],
    ids=["nul", "long-component", "deep", "trailing-slash", "hidden", "dotdot"],
)
def test_bad_names_are_invalid_argument_without_server_paths(
    client: Client, model_root: Path, data_root: Path, name: str
) -> None:
    for call in (
        lambda: client.get_model(name),
        lambda: client.get_dataset(name),
        lambda: client.topk(name, "conv1", 0, dataset="ds").result(),
    ):
        error = refused(call, INVALID, "INVALID_NAME")
        assert_no_server_path(error.message, model_root, data_root)
        assert len(error.message) < 700


def test_a_huge_name_gets_its_real_error_not_a_metadata_overflow(client: Client) -> None:
    """Echoed whole, a 100 000-character name overflowed the client's metadata limit."""
    error = refused(lambda: client.get_model("m" * 100_000), INVALID, "INVALID_NAME")
    assert "100000 characters" in error.message
    assert len(error.message) < 700
    missing = "n" * 250
    error = refused(lambda: client.get_model(missing), grpc.StatusCode.NOT_FOUND)
    assert "m" * 201 not in error.message and len(error.message) < 700


def test_upload_names_that_would_write_hidden_or_deep_files_are_refused(
    client: Client, model_root: Path, net_file: Path
) -> None:
    for name in ("rapid_orientation/", "x/" * 2000 + "y", "a\x00b"):
        refused(lambda name=name: client.upload_model(net_file, name), INVALID, "INVALID_NAME")
    assert [p for p in model_root.rglob("*") if p.is_file()] == []
    assert client.upload_model(net_file, "fine/name").name == "fine/name"


def test_a_kept_image_id_that_would_be_hidden_is_refused(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(bright_square_model(64), model_root, "net")
    images = [("ok.png", png_bytes(64, 64)), (".hidden.png", png_bytes(64, 64))]
    refused(
        lambda: client.topk_images("net", "conv1", 0, images, keep_as_dataset="kept").result(),
        INVALID,
        "INVALID_NAME",
    )
    assert [p.name for p in data_root.iterdir() if not p.name.startswith(".")] == []


def test_a_sidecar_with_a_non_finite_number_is_a_clear_error(
    client: Client, model_root: Path
) -> None:
    save(bright_square_model(64), model_root, "net")
    (model_root / "net.preprocess.json").write_text('{"resize_shorter": 1e400}')
    error = refused(lambda: client.get_model("net"), INVALID, "INVALID_PREPROCESSING")
    assert "resize_shorter" in error.message and "finite" in error.message
    (model_root / "net.preprocess.json").write_text('{"scale": NaN}')
    refused(lambda: client.get_model("net"), INVALID, "INVALID_PREPROCESSING")


def _with_version(model: onnx.ModelProto, ir: int | None = None, opset: int | None = None):  # type: ignore[no-untyped-def]
    if ir is not None:
        model.ir_version = ir
    if opset is not None:
        del model.opset_import[:]
        model.opset_import.append(helper.make_opsetid("", opset))
    return model


@pytest.mark.parametrize(
    ("model", "named"),
    [
        (dynamic_model(TensorProto.UINT8), "uint8"),
        (dynamic_model(TensorProto.INT64), "int64"),
        (dynamic_model(TensorProto.FLOAT16), "float16"),
        (dynamic_model(channels=1), "1 channel"),
        (dynamic_model(channels=4), "4 channel"),
        (_with_version(bright_square_model(64), ir=999), "IR version 999"),
        (_with_version(bright_square_model(64), opset=999), "opset 999"),
    ],
    ids=["uint8", "int64", "float16", "gray", "rgba", "ir999", "opset999"],
)
def test_models_the_scan_cannot_feed_are_refused_when_loaded(
    client: Client, model_root: Path, model: onnx.ModelProto, named: str
) -> None:
    save(model, model_root, "odd")
    error = refused(
        lambda: client.load_model("odd"), grpc.StatusCode.FAILED_PRECONDITION, "MODEL_UNSUPPORTED"
    )
    assert named in error.message


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_or_truncated_external_data_is_refused_when_loaded(
    client: Client, model_root: Path, data_root: Path, damage: str
) -> None:
    model = bright_square_model(64)
    onnx.save(
        model,
        str(model_root / "ext.onnx"),
        save_as_external_data=True,
        location="ext.data",
        size_threshold=0,
    )
    data = model_root / "ext.data"
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:10])
    error = refused(
        lambda: client.load_model("ext"), grpc.StatusCode.FAILED_PRECONDITION, "MODEL_INVALID"
    )
    assert damage in error.message
    assert_no_server_path(error.message, model_root)


def test_random_bytes_as_a_message_are_invalid_argument_without_a_traceback(
    client: Client, server: object, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"\xff\xff\xff\x07not protobuf"
    channel = grpc.insecure_channel(server.address)  # type: ignore[attr-defined]
    calls = {
        "unary": lambda: channel.unary_unary("/maxact.v1.ModelService/ListModels")(
            garbage, timeout=10
        ),
        "server-stream": lambda: list(
            channel.unary_stream("/maxact.v1.TopKService/StreamTopK")(garbage, timeout=10)
        ),
        "client-stream": lambda: list(
            channel.stream_stream("/maxact.v1.TopKService/StreamTopKImages")(
                iter([garbage]), timeout=10
            )
        ),
        "second-message": lambda: list(
            channel.stream_stream("/maxact.v1.TopKService/StreamTopKImages")(
                iter(
                    [
                        topk_service_pb2.StreamTopKImagesRequest(
                            query=topk_service_pb2.TopKQuery(model="m", layer="l")
                        ).SerializeToString(),
                        garbage,
                    ]
                ),
                timeout=10,
            )
        ),
    }
    with caplog.at_level(logging.INFO):
        for kind, call in calls.items():
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() in (INVALID, grpc.StatusCode.NOT_FOUND), kind
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    channel.close()
    assert client.list_models() == []


def test_every_method_answers_an_empty_message_without_internal(
    client: Client, server: object
) -> None:
    """Default (empty) requests name what is missing; none is INTERNAL or UNKNOWN."""
    channel = grpc.insecure_channel(server.address)  # type: ignore[attr-defined]
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    for method, request in (
        (stub.GetModel, model_service_pb2.GetModelRequest()),
        (stub.LoadModel, model_service_pb2.LoadModelRequest()),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            method(request, timeout=10)
        assert caught.value.code() == INVALID
    scans = channel.unary_unary(
        "/maxact.v1.ScanService/GetScan",
        request_serializer=scan_service_pb2.GetScanRequest.SerializeToString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        scans(scan_service_pb2.GetScanRequest(name="scans/" + "z" * 5000), timeout=10)
    assert caught.value.code() in (INVALID, grpc.StatusCode.NOT_FOUND)
    channel.close()
