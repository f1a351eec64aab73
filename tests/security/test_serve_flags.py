"""`maxact serve --auth-token-file --tls-cert --tls-key` as a real process: the command line
reaches the server, which then speaks TLS and checks the token."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from maxact.client import Client, MaxactError
from tests.onnx_models import bright_square_model, save


def test_serve_flags_turn_on_tls_and_the_token_in_a_real_process(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    save(bright_square_model(64), tmp_path / "models", "net")
    cert, key = certificate
    token = tmp_path / "token"
    token.write_text("process-token\n")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "maxact.client.cli", "serve",
            "--model-root", str(tmp_path / "models"), "--port", "0", "--device", "cpu",
            "--auth-token-file", str(token), "--tls-cert", str(cert), "--tls-key", str(key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
        assert match, line + (process.stderr.read() if process.poll() is not None else "")
        address = f"127.0.0.1:{match.group(1)}"
        with Client(address, timeout=30, tls_ca=cert, token="process-token") as client:
            assert [m.name for m in client.list_models()] == ["net"]
        client = Client(address, timeout=30, tls_ca=cert, token="wrong")
        with client, pytest.raises(MaxactError) as caught:
            client.list_models()
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_global_token_and_ca_options_are_not_passed_to_serve() -> None:
    from maxact.client.cli import serve_argv

    argv = ["--token-file", "serve", "--tls-ca", "ca", "serve", "--model-root", "M"]
    assert serve_argv(argv) == ["--model-root", "M"]
