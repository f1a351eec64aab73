"""Fixtures: a real maxact server in-process on an ephemeral loopback port, and real clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from maxact.client import Client


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
