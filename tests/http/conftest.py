"""Fixtures of the HTTP face: a real server in-process (HTTP on an ephemeral loopback port)
and an httpx client talking to it over the socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from maxact.server.app import RunningServer, start_server
from tests.onnx_models import bright_square_model, save

TOKEN = "s3cret-token"


def square_images(folder: Path, count: int = 6) -> None:
    """`count` 64x64 images, image i with a bright square at row 8i of brightness 100+20i."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        pixels[8 * i : 8 * i + 4, 10:14] = 100 + 20 * i
        Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A model root with `net` (bright_square_model) and a data root with `squares`."""
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    save(bright_square_model(64), model_root, "net")
    square_images(data_root / "squares")
    return model_root, data_root


@pytest.fixture
def http_server(world: tuple[Path, Path], tmp_path: Path) -> Iterator[RunningServer]:
    model_root, data_root = world
    with start_server(model_root, data_root, device="cpu", store=tmp_path / "s.sqlite") as server:
        yield server


@pytest.fixture
def api(http_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_server.http_url, timeout=60) as client:
        yield client


@pytest.fixture
def token_server(world: tuple[Path, Path], tmp_path: Path) -> Iterator[RunningServer]:
    model_root, data_root = world
    with start_server(
        model_root, data_root, device="cpu", store=tmp_path / "s.sqlite", auth_token=TOKEN
    ) as server:
        yield server
