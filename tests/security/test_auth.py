"""Bearer tokens: without the right one every maxact RPC is UNAUTHENTICATED (unary, server
streaming and client streaming alike) while the health service still answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from maxact.client import Client
from maxact.client.cli.main import main as cli_main
from tests.errors import raised
from tests.onnx_models import bright_square_model, save

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def secured(model_root: Path, data_root: Path) -> Iterator[object]:
    from maxact.server.app import start_server

    save(bright_square_model(64), model_root, "net")
    (data_root / "ds").mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(data_root / "ds" / f"{i}.png")
    running = start_server(model_root, data_root, port=0, device="cpu", auth_token=TOKEN)
    try:
        yield running
    finally:
        running.stop()


def test_calls_without_a_token_are_unauthenticated_token_missing(
    secured: object, net_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAXACT_TOKEN", raising=False)
    with Client(secured.address, timeout=30) as client:  # type: ignore[attr-defined]
        for call in (
            client.list_models,
            lambda: client.get_model("net"),
            lambda: client.topk("net", "conv1", 0, dataset="ds").result(),
            lambda: client.upload_model(net_file, "other"),
        ):
            error = raised(call)
            assert error.code == grpc.StatusCode.UNAUTHENTICATED
            assert error.reason == "TOKEN_MISSING"
            assert "Bearer" in error.message


def test_a_wrong_token_is_unauthenticated_token_invalid(secured: object, net_file: Path) -> None:
    address = secured.address  # type: ignore[attr-defined]
    for wrong in ("nope", TOKEN + "x", TOKEN[:-1]):
        with Client(address, timeout=30, token=wrong) as client:
            error = raised(client.list_models)
            assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
            assert raised(lambda: client.upload_model(net_file, "x")).reason == "TOKEN_INVALID"


def test_refused_uploads_store_nothing(secured: object, net_file: Path, model_root: Path) -> None:
    with Client(secured.address, timeout=30, token="wrong") as client:  # type: ignore[attr-defined]
        raised(lambda: client.upload_model(net_file, "intruder"))
    assert sorted(p.name for p in model_root.rglob("*")) == ["net.onnx"]


def test_health_answers_serving_without_a_token(secured: object) -> None:
    with grpc.insecure_channel(secured.address) as channel:  # type: ignore[attr-defined]
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_the_right_token_works_for_unary_streaming_and_upload_calls(
    secured: object, net_file: Path
) -> None:
    with Client(secured.address, timeout=60, token=TOKEN) as client:  # type: ignore[attr-defined]
        assert [m.name for m in client.list_models()] == ["net"]
        result = client.topk("net", "conv1", 0, dataset="ds", k=2).result()
        assert [hit.image for hit in result.hits] == ["2.png", "1.png"]
        assert client.upload_model(net_file, "uploaded").name == "uploaded"


def test_the_token_comes_from_maxact_token_when_not_given(
    secured: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAXACT_TOKEN", TOKEN)
    with Client(secured.address, timeout=30) as client:  # type: ignore[attr-defined]
        assert [m.name for m in client.list_models()] == ["net"]


def test_cli_sends_the_token_from_token_file(
    secured: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("MAXACT_TOKEN", raising=False)
    address = secured.address  # type: ignore[attr-defined]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert cli_main(["--server", address, "--token-file", str(token_file), "models"]) == 0
    assert "net" in capsys.readouterr().out
    assert cli_main(["--server", address, "models"]) == 1
    assert "UNAUTHENTICATED (TOKEN_MISSING)" in capsys.readouterr().err


def test_serve_refuses_an_empty_token_file(tmp_path: Path, model_root: Path) -> None:
    from maxact.server.app import main as serve_main

    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert serve_main(["--model-root", str(model_root), "--auth-token-file", str(empty)]) == 2
