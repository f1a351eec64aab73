"""How the HTTP face is served: beside gRPC in `maxact serve` (the start-up line names its
URL, --no-http turns it off, SIGTERM drains both), with the gRPC face's TLS certificate, and a
clear start-up error when its port is taken."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from maxact.client import Client
from maxact.server.app import StartupError, start_server
from tests.onnx_models import bright_square_model, save
from tests.security.conftest import make_certificate
from tests.serve_process import SERVE


@contextmanager
def _serve(tmp_path: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`maxact serve` (free ports) and the start-up line it printed."""
    save(bright_square_model(64), tmp_path / "models", "net")
    process = subprocess.Popen(
        [*SERVE, "--model-root", str(tmp_path / "models"), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},
    )
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_serve_names_the_http_url_and_sigterm_drains_both_faces(tmp_path: Path) -> None:
    with _serve(tmp_path) as (process, line):
        found = re.search(r"serving on (127\.0\.0\.1:\d+) .*on (http://127\.0\.0\.1:\d+)", line)
        assert found, line
        with (
            httpx.Client(base_url=found.group(2), timeout=30) as api,
            Client(found.group(1), timeout=30) as client,
        ):
            assert api.get("/api/v1/models").json()["models"][0]["name"] == "net"
            assert [m.name for m in client.list_models()] == ["net"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


@pytest.mark.slow
def test_no_http_serves_grpc_only(tmp_path: Path) -> None:
    with _serve(tmp_path, "--no-http") as (process, line):
        assert "serving on 127.0.0.1:" in line and "http" not in line.lower()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_https_uses_the_grpc_certificate(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path / "tls")
    save(bright_square_model(64), tmp_path / "models", "net")
    with start_server(
        tmp_path / "models",
        device="cpu",
        store=tmp_path / "s.sqlite",
        tls=(cert.read_bytes(), key.read_bytes()),
    ) as server:
        assert server.http_url.startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=server.http_url, verify=trust, timeout=30) as api:
            assert api.get("/api/v1/models").status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{server.http_address}/api/v1/models", timeout=5)


def test_a_taken_http_port_is_a_clear_start_up_error(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"HTTP on 127.0.0.1:{port}.*--http-port"):
            start_server(tmp_path / "models", device="cpu", http_port=port)


def test_the_http_listener_is_a_tcp_socket_so_kept_alive_answers_are_not_delayed() -> None:
    from maxact.server.http.serve import bind

    # asyncio sets TCP_NODELAY only on connections of IPPROTO_TCP listeners; without it each
    # answer on a kept-alive connection waited ~40 ms for a delayed ACK
    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
