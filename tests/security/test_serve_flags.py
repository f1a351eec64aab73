"""`maxact serve --auth-token-file --tls-cert --tls-key` as a real process: the command line
reaches the server, which then speaks TLS and checks the token."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest

from maxact.client import Client, MaxactError
from tests.onnx_models import bright_square_model, save
from tests.serve_process import serve_process


@pytest.mark.slow
def test_serve_flags_turn_on_tls_and_the_token_in_a_real_process(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    save(bright_square_model(64), tmp_path / "models", "net")
    cert, key = certificate
    token = tmp_path / "token"
    token.write_text("process-token\n")
    flags = ["--model-root", str(tmp_path / "models"), "--auth-token-file", str(token)]
    flags += ["--tls-cert", str(cert), "--tls-key", str(key)]
    with serve_process(*flags) as (process, address):
        with Client(address, timeout=30, tls_ca=cert, token="process-token") as client:
            assert [m.name for m in client.list_models()] == ["net"]
        client = Client(address, timeout=30, tls_ca=cert, token="wrong")
        with client, pytest.raises(MaxactError) as caught:
            client.list_models()
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_global_token_and_ca_options_are_not_passed_to_serve() -> None:
    from maxact.client.cli.main import serve_argv

    argv = ["--token-file", "serve", "--tls-ca", "ca", "serve", "--model-root", "M"]
    assert serve_argv(argv) == ["--model-root", "M"]
