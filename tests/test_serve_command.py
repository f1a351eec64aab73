"""`maxact serve` as a real process: it listens, answers, and drains on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from maxact.client import Client
from tests.onnx_models import bright_square_model, save
from tests.serve_process import serve_process

pytestmark = pytest.mark.slow  # `maxact serve` subprocesses


def test_serve_listens_on_the_printed_port_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    save(bright_square_model(64), tmp_path / "models", "net")
    with serve_process("--model-root", str(tmp_path / "models")) as (process, address):
        with Client(address, timeout=30) as client:
            assert [m.name for m in client.list_models()] == ["net"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_serve_refuses_a_missing_model_root(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "maxact.client.cli.main",
            "serve",
            "--model-root",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "model-root" in result.stderr
