"""`maxact serve --ray-address` where no Ray cluster answers exits 2 with one line naming the
address, within --ray-connect-seconds (it used to hang start-up forever, or print a 44-line
traceback for an address that is not one). Every address is on 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from tests.ray.conftest import LOOPBACK_ENV
from tests.serve_process import SERVE

pytest.importorskip("ray")

CONNECT_SECONDS = 3


@contextmanager
def _closed_port() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"127.0.0.1:{port}"  # nothing listens there now: connections are refused


@contextmanager
def _silent_port() -> Iterator[str]:
    with socket.socket() as silent:  # accepts TCP (the kernel's backlog), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield f"127.0.0.1:{silent.getsockname()[1]}"


@contextmanager
def _http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _literal(address: str) -> Iterator[str]:
    yield address


ADDRESSES: dict[str, Callable[[], AbstractContextManager[str]]] = {
    "closed-port": _closed_port,
    "silent-port": _silent_port,
    "http-server": _http_server,
    "port-out-of-range": lambda: _literal("127.0.0.1:99999"),
    "not-an-address": lambda: _literal("not-an-address"),
}


@pytest.mark.parametrize("kind", list(ADDRESSES))
def test_no_ray_cluster_at_the_address_exits_2_with_one_line_naming_it(
    tmp_path: Path, kind: str
) -> None:
    (tmp_path / "models").mkdir()
    with ADDRESSES[kind]() as address:
        started = time.monotonic()
        result = subprocess.run(
            [
                *SERVE,
                *["--model-root", str(tmp_path / "models"), "--store", str(tmp_path / "s.db")],
                *["--ray-address", address, "--ray-connect-seconds", str(CONNECT_SECONDS)],
            ],
            capture_output=True,
            text=True,
            timeout=180,  # the old behaviour: neither serving nor exited after 540 s
            stdin=subprocess.DEVNULL,
            env={**os.environ, **LOOPBACK_ENV},
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line.lower()]
    assert len(errors) == 1 and address in errors[0], result.stderr
    assert "serving on" not in result.stdout
    assert elapsed < 120, elapsed
