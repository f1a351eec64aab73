"""TLS: a round trip with a self-signed certificate made in the test; clients that do not trust
the certificate, or speak plaintext, cannot talk to the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from maxact.client import Client, MaxactError
from maxact.client.cli.main import main as cli_main
from tests.onnx_models import bright_square_model, save
from tests.security.conftest import make_certificate


@pytest.fixture
def tls_server(model_root: Path, certificate: tuple[Path, Path]) -> Iterator[object]:
    from maxact.server.app import start_server

    save(bright_square_model(64), model_root, "net")
    cert, key = certificate
    running = start_server(
        model_root, port=0, device="cpu", tls=(cert.read_bytes(), key.read_bytes()), auth_token="t"
    )
    try:
        yield running
    finally:
        running.stop()


def test_tls_round_trip_with_a_self_signed_certificate(
    tls_server: object, certificate: tuple[Path, Path], net_file: Path
) -> None:
    cert, _ = certificate
    address = tls_server.address  # type: ignore[attr-defined]
    with Client(address, timeout=30, tls_ca=cert, token="t") as client:
        assert [m.name for m in client.list_models()] == ["net"]
        assert client.get_model("net").input_height == 64
        assert client.upload_model(net_file, "over/tls").name == "over/tls"
    with Client(address, timeout=30, tls_ca=cert.read_bytes(), token="t") as client:
        assert [m.name for m in client.list_models()] == ["net", "over/tls"]


def test_a_plaintext_client_cannot_talk_to_a_tls_server(tls_server: object) -> None:
    address = tls_server.address  # type: ignore[attr-defined]
    with Client(address, timeout=5, token="t") as client, pytest.raises(MaxactError) as caught:
        client.list_models()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_client_trusting_another_certificate_refuses_the_server(
    tls_server: object, tmp_path: Path
) -> None:
    other_ca, _ = make_certificate(tmp_path / "other", "other")
    address = tls_server.address  # type: ignore[attr-defined]
    client = Client(address, timeout=5, tls_ca=other_ca, token="t")
    with client, pytest.raises(MaxactError) as caught:
        client.list_models()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_cli_connects_with_tls_ca_and_token_file(
    tls_server: object,
    certificate: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert, _ = certificate
    token = tmp_path / "token"
    token.write_text("t")
    address = tls_server.address  # type: ignore[attr-defined]
    argv = ["--server", address, "--tls-ca", str(cert), "--token-file", str(token)]
    assert cli_main([*argv, "models", "--json"]) == 0
    assert '"net"' in capsys.readouterr().out


def test_serve_needs_both_tls_cert_and_key(
    model_root: Path, certificate: tuple[Path, Path]
) -> None:
    from maxact.server.app import main as serve_main

    cert, _ = certificate
    assert serve_main(["--model-root", str(model_root), "--tls-cert", str(cert)]) == 2
