"""A server on a known store, shared by the tests that look at its tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from maxact.client import Client
from tests.datasets import write_images
from tests.onnx_models import bright_square_model, save


@pytest.fixture
def served(model_root: Path, data_root: Path, store_location: Path | str) -> Iterator[Client]:
    """A server on a known store (to look at its tables), model `net`, dataset `small`; once
    per back end (an SQLite file, a PostgreSQL database)."""
    from maxact.server.app import start_server

    save(bright_square_model(32), model_root, "net")
    write_images(data_root / "small", 6, 32, seed=1)
    running = start_server(
        model_root,
        data_root,
        port=0,
        device="cpu",
        store=store_location,
        state_dir=model_root.parent / "state",
    )
    try:
        with Client(running.address, timeout=60) as client:
            yield client
    finally:
        running.stop()
