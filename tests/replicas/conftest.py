"""Two (or more) replicas over one real PostgreSQL database, sharing model, data and state
folders, as a Deployment of maxact would run them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client
from maxact.server.app import RunningServer, start_server
from tests.datasets import write_images
from tests.onnx_models import heavy_cnn, layer_outputs, save
from tests.postgres import Postgres

SIZE, DEPTH = 64, 4
LAYER = f"relu{DEPTH - 1}"
LEASE = 2.0  # seconds: take-overs in the tests happen quickly


@dataclass
class Shared:
    """What every replica of a test mounts: the database, models, datasets, state folder."""

    url: str
    models: Path
    data: Path
    state: Path
    postgres: Postgres

    def replica(self, **settings: Any) -> RunningServer:
        values = {"lease_seconds": LEASE, "checkpoint_images": 16, **settings}
        return start_server(
            self.models, self.data, device="cpu", store=self.url, state_dir=self.state, **values
        )

    def flags(self, *extra: str) -> list[str]:
        """`maxact serve` flags of a subprocess replica on the same store and folders."""
        return [
            *["--model-root", str(self.models), "--data-root", str(self.data)],
            *["--store", self.url, "--state-dir", str(self.state)],
            *["--lease-seconds", str(LEASE), "--checkpoint-images", "16", *extra],
        ]


@pytest.fixture
def shared(postgres: Postgres, tmp_path: Path) -> Shared:
    """Model `heavy`, datasets `many` (400 images: a scan of seconds) and `few` (40)."""
    models, data = tmp_path / "models", tmp_path / "data"
    save(heavy_cnn(SIZE, depth=DEPTH), models, "heavy")
    write_images(data / "many", 400, SIZE, seed=5)
    write_images(data / "few", 40, SIZE, seed=6)
    return Shared(postgres.url(), models, data, tmp_path / "state", postgres)


@pytest.fixture
def replicas(shared: Shared) -> Iterator[tuple[RunningServer, RunningServer]]:
    with shared.replica() as a, shared.replica() as b:
        yield a, b


def hits(
    client: Client, scan_id: str, k: int = 3, channels: tuple[int, ...] = (0, 5, 17)
) -> list[list]:
    """The ranked (image, score, unit) of the top `k` of some channels of a finished scan."""
    answers = []
    for channel in channels:
        _, patches, _ = client.scans.neuron(scan_id, LAYER, channel, k=k, patches=False)
        answers.append([(p.hit.image, p.hit.score, tuple(p.hit.unit)) for p in patches])
    return answers


def brute_force(data: Path, channels: tuple[int, ...], k: int) -> list[list[tuple[str, float]]]:
    """Per channel, (image, score) of the k images whose channel maximum is largest: the images
    run through plain onnxruntime (default preprocessing: pixels / 255); ties: earlier image."""
    model = heavy_cnn(SIZE, depth=DEPTH)
    paths = sorted(data.iterdir())
    maxima = []
    for first in range(0, len(paths), 50):
        pixels = np.stack(
            [
                np.asarray(Image.open(p).convert("RGB"), np.float32)
                for p in paths[first : first + 50]
            ]
        )
        batch = (pixels * np.float32(1 / 255)).transpose(0, 3, 1, 2)
        maxima.append(layer_outputs(model, [LAYER], batch)[LAYER].max(axis=(2, 3)))
    responses = np.concatenate(maxima)
    ranked = []
    for channel in channels:
        order = sorted(range(len(paths)), key=lambda i: (-responses[i, channel], i))[:k]
        ranked.append([(paths[i].name, float(responses[i, channel])) for i in order])
    return ranked
