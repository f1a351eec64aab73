"""`maxact serve` that cannot start says why in one line and exits non-zero, without a traceback
(reproduction 10, and the corrupt-store case of 4)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.onnx_models import bright_square_model, save
from tests.security.conftest import make_certificate
from tests.security.robust_helpers import unwritable_folder
from tests.serve_process import serve_fails

pytestmark = pytest.mark.slow  # `maxact serve` subprocesses


def _read_only_store(tmp_path: Path) -> Path:
    return unwritable_folder(tmp_path) / "store.sqlite"


def _zeroed_store(tmp_path: Path) -> Path:
    path = tmp_path / "zeroed.sqlite"
    path.write_bytes(b"\x00" * 16384)
    return path


@pytest.mark.parametrize(
    ("store", "says"),
    [(_read_only_store, "store"), (_zeroed_store, "not a maxact store or is corrupt")],
    ids=["read-only-folder", "zeroed-file"],
)
def test_a_store_that_cannot_be_used_is_one_line(
    tmp_path: Path, store: Callable[[Path], Path], says: str
) -> None:
    save(bright_square_model(64), tmp_path / "models", "net")
    path = store(tmp_path)
    line = serve_fails("--model-root", str(tmp_path / "models"), "--store", str(path))
    assert says in line and "--store" in line


def test_a_tls_key_that_does_not_match_the_certificate_is_named(tmp_path: Path) -> None:
    cert, _ = make_certificate(tmp_path / "a", "a")
    _, other_key = make_certificate(tmp_path / "b", "b")
    line = serve_fails(
        *["--model-root", str(tmp_path), "--store", str(tmp_path / "s.sqlite")],
        *["--tls-cert", str(cert), "--tls-key", str(other_key)],
    )
    assert "does not match" in line  # grpc itself only says "Failed to bind to address"


@pytest.mark.parametrize("flag", ["--port", "--health-port"])
def test_a_busy_port_is_one_line(tmp_path: Path, flag: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        others = ["--port", "0"] if flag != "--port" else []
        line = serve_fails(
            *["--model-root", str(tmp_path), "--store", str(tmp_path / "s.sqlite")],
            *others,
            *[flag, str(port)],
        )
    assert f"127.0.0.1:{port}" in line and flag in line, line


@pytest.mark.parametrize("size", ["nan", "inf", "-1", "0"])
def test_a_cache_size_that_bounds_nothing_is_one_line(tmp_path: Path, size: str) -> None:
    line = serve_fails(
        *["--model-root", str(tmp_path), "--store", str(tmp_path / "s.sqlite")],
        *["--cache-dir", str(tmp_path / "cache"), "--cache-gb", size],
    )
    assert "--cache-gb" in line and repr(size) in line
    bound = "finite number" if size in ("nan", "inf") else "greater than 0"
    assert bound in line
