"""Client-streamed images touch the server's disk only when the client asks to keep them as a
dataset, and then all or nothing."""

from __future__ import annotations

import io
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from maxact.client import Client, MaxactError, Progress
from tests.onnx_models import bright_square_model, heavy_cnn, save


def _images(count: int, size: int = 64) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(3)
    pairs = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
        pairs.append((f"sub/img_{i:03d}.png" if i % 2 else f"img_{i:03d}.png", buffer.getvalue()))
    return pairs


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_images_are_not_written_anywhere_unless_asked(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(bright_square_model(64), model_root, "net")
    before = _tree(data_root)
    client.topk_images("net", "conv1", 0, _images(6), k=2).result()
    assert _tree(data_root) == before


def test_kept_images_become_a_dataset_with_the_same_ids_bytes_and_answers(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(bright_square_model(64), model_root, "net")
    images = _images(8)
    streamed = client.topk_images("net", "conv1", 0, images, k=3, keep_as_dataset="kept").result()
    for image_id, data in images:
        assert (data_root / "kept" / image_id).read_bytes() == data
    assert not [p for p in data_root.iterdir() if p.name.startswith(".")]
    again = client.topk("net", "conv1", 0, dataset="kept", k=3).result()
    assert [(h.image, h.score, h.box) for h in again.hits] == [
        (h.image, h.score, h.box) for h in streamed.hits
    ]
    with pytest.raises(MaxactError) as caught:
        client.topk_images("net", "conv1", 0, images, keep_as_dataset="kept").result()
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.reason == "DATASET_EXISTS"


def test_a_cancelled_stream_keeps_nothing(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(heavy_cnn(128), model_root, "heavy")
    stream = client.topk_images(
        "heavy", "relu5", 0, _images(150, 128), k=2, keep_as_dataset="partial"
    )
    for event in stream:
        if isinstance(event, Progress) and event.images_done > 0:
            break
    stream.cancel()
    # the scan thread removes the partial folder when it stops: give a loaded machine time
    deadline = time.monotonic() + 30
    while list(data_root.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(data_root.iterdir()) == []
