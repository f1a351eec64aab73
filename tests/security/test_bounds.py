"""Memory amplification is refused BEFORE allocating: the model-input bound (requested geometry
and each image's resize), the decoded-pixel bound and the per-request memory bound, each named
with the `maxact serve` flag that sets it (reproduction 1 of the robustness issue)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from maxact.client import Client, Preprocessing
from maxact.server.app import start_server
from tests.onnx_models import bright_square_model, save
from tests.security.robust_helpers import dynamic_model, png_bytes, refused


@pytest.fixture
def dyn_and_ds(model_root: Path, data_root: Path) -> None:
    """The dynamic-size model "dyn" and a dataset "ds" of three flat 64x64 images."""
    save(dynamic_model(), model_root, "dyn")
    (data_root / "ds").mkdir()
    for i in range(3):
        (data_root / "ds" / f"ok_{i}.png").write_bytes(png_bytes(64, 64, 40 * (i + 1)))


def test_resize_shorter_far_beyond_the_input_bound_is_refused_at_once(
    client: Client, dyn_and_ds: None
) -> None:
    started = time.monotonic()
    prep = Preprocessing(resize_shorter=32768, center_crop=(224, 224))
    error = refused(
        lambda: client.topk("dyn", "relu1", 0, dataset="ds", preprocessing=prep).result(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INPUT_TOO_LARGE",
    )
    assert "--max-input-pixels" in error.message and "resize_shorter" in error.message
    assert time.monotonic() - started < 5
    refused(
        lambda: client.scans.create("dyn", ["relu1"], "ds", preprocessing=prep),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INPUT_TOO_LARGE",
    )  # a persisted scan that would exceed the bound is refused at CreateScan
    assert client.scans.list() == []


def test_a_huge_size_on_a_dynamic_model_is_refused_for_fields_and_scans(
    client: Client, dyn_and_ds: None
) -> None:
    started = time.monotonic()
    error = refused(
        lambda: client.receptive_field("dyn", "relu1", size=(10000, 10000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INPUT_TOO_LARGE",
    )
    assert "--max-input-pixels" in error.message
    refused(
        lambda: client.topk(
            "dyn", "relu1", 0, dataset="ds", preprocessing=Preprocessing(size=(4096, 4096))
        ).result(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INPUT_TOO_LARGE",
    )
    assert time.monotonic() - started < 5
    field = client.receptive_field("dyn", "relu1", size=(64, 64))  # still serving
    assert field is not None


def test_a_thin_streamed_image_whose_resize_would_explode_is_skipped_with_the_bound(
    client: Client, model_root: Path
) -> None:
    """A 126-byte 16000x1 PNG under resize_shorter 256 would become 256 x 4,096,000 pixels."""
    save(bright_square_model(64), model_root, "net")
    (model_root / "net.preprocess.json").write_text(json.dumps({"resize_shorter": 256}))
    thin = png_bytes(16000, 1)
    assert len(thin) < 200
    images = [("a.png", png_bytes(64, 64, 50)), ("thin.png", thin), ("b.png", png_bytes(64, 64))]
    started = time.monotonic()
    result = client.topk_images("net", "conv1", 0, images, k=2).result()
    assert time.monotonic() - started < 20
    assert [s.image for s in result.skipped] == ["thin.png"]
    assert "--max-input-pixels" in result.skipped[0].reason
    assert (result.images_scanned, result.images_failed) == (2, 1)
    assert [m.name for m in client.list_models()] == ["net"]


def test_streamed_images_beyond_the_request_memory_bound_are_resource_exhausted(
    model_root: Path,
) -> None:
    save(bright_square_model(64), model_root, "net")
    bound_mb = 200_000 / 2**20  # exact in binary: the server holds 200,000 bytes at most
    rng = np.random.default_rng(0)
    noise = []  # 8 noise PNGs of ~67 KB: all stay in the top 9, so all are held at once
    for i in range(8):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (150, 150, 3), np.uint8)).save(buffer, "PNG")
        noise.append((f"{i}.png", buffer.getvalue()))
    running = start_server(model_root, device="cpu", max_request_mb=bound_mb)
    with running, Client(running.address, timeout=60) as client:
        error = refused(
            lambda: client.topk_images("net", "conv1", 0, noise, k=9).result(),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "REQUEST_MEMORY_EXCEEDED",
        )
        assert "--max-request-mb" in error.message
        assert [m.name for m in client.list_models()] == ["net"]
