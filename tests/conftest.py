"""Fixtures: a real maxact server in-process on an ephemeral loopback port, and real clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from maxact.client import Client
from tests.onnx_models import bright_square_model


@pytest.fixture
def model_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    """bright_square_model saved outside the model root: a model file to upload."""
    path = tmp_path / "upload" / "net.onnx"
    path.parent.mkdir()
    onnx.save(bright_square_model(64), str(path))
    return path


@pytest.fixture
def server(model_root: Path, data_root: Path) -> Iterator[object]:
    from maxact.server.app import start_server

    running = start_server(model_root, data_root, port=0, device="cpu")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server: object) -> Iterator[Client]:
    with Client(server.address, timeout=120) as connected:  # type: ignore[attr-defined]
        yield connected
