"""Limits: a decompression bomb in a dataset is skipped with a reason (no crash, no gigabytes
decoded), and calls beyond maximum_concurrent_rpcs are RESOURCE_EXHAUSTED, not queued forever."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from maxact.client import Client, MaxactError
from maxact.v1 import model_service_pb2, model_service_pb2_grpc
from tests.onnx_models import bright_square_model, save


def _header(name: str, sha256: str) -> model_service_pb2.UploadModelRequest:
    """The first message of an upload stream."""
    return model_service_pb2.UploadModelRequest(
        header=model_service_pb2.UploadModelHeader(name=name, sha256=sha256)
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = 30_000) -> None:
    """A valid all-black 1-bit PNG of side x side pixels: ~100 KB on disk, 900 megapixels
    (2.7 GB as RGB) once decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_in_a_dataset_is_skipped_with_a_reason(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(bright_square_model(64), model_root, "net")
    dataset = data_root / "ds"
    dataset.mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 50 * (i + 1), np.uint8)).save(dataset / f"ok_{i}.png")
    bomb_png(dataset / "bomb.png")
    assert (dataset / "bomb.png").stat().st_size < 1_000_000

    started = time.monotonic()
    result = client.topk("net", "conv1", 0, dataset="ds", k=2).result()

    assert time.monotonic() - started < 20
    assert [s.image for s in result.skipped] == ["bomb.png"]
    reason = result.skipped[0].reason
    assert "decompression bomb" in reason and "900000000 pixels" in reason
    assert (result.images_scanned, result.images_failed) == (3, 1)
    assert [hit.image for hit in result.hits] == ["ok_2.png", "ok_1.png"]
    assert [m.name for m in client.list_models()] == ["net"]  # the server is still serving


def test_calls_beyond_maximum_concurrent_rpcs_are_resource_exhausted(model_root: Path) -> None:
    from maxact.server.app import start_server

    running = start_server(model_root, port=0, device="cpu", max_concurrent_rpcs=1)
    release = threading.Event()

    def stalled_upload():  # type: ignore[no-untyped-def]
        yield _header(name="slow", sha256="a" * 64)
        release.wait(30)

    with running, Client(running.address, timeout=30) as client:
        stub = model_service_pb2_grpc.ModelServiceStub(client._channel)
        holding = stub.UploadModel.future(stalled_upload())  # occupies the only slot
        deadline = time.monotonic() + 20
        while not any(p.name.endswith(".part") for p in model_root.rglob("*")):
            assert time.monotonic() < deadline, "the upload never reached the server"
            time.sleep(0.02)
        with pytest.raises(MaxactError) as caught:
            client.list_models()
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-concurrent-rpcs" in caught.value.message
        with pytest.raises(MaxactError) as caught:  # streams too (they were CANCELLED)
            client.topk("net", "conv1", 0, dataset="ds").result()
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        # a health probe is always answered: it must not declare a busy server dead
        health = health_pb2_grpc.HealthStub(client._channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        release.set()
        with pytest.raises(grpc.RpcError):
            holding.result(timeout=20)  # empty upload: checksum mismatch
        assert client.list_models() == []  # the slot is free again


def test_a_bomb_between_pillows_warning_and_error_limits_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 9000x9000 1-bit PNG (~10 KB on disk) is over the decoded-pixel bound but under twice
    Pillow's limit, where Pillow only warns and would decode it in full; it must be refused from
    its header alone, naming the bound's serve flag."""
    from maxact.server import limits
    from maxact.server.data.reader import ImageSource, load_original

    path = tmp_path / "bomb.png"
    with monkeypatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        Image.new("1", (9_000, 9_000)).save(path)
    bound = limits.current().max_image_pixels
    assert bound < 9_000 * 9_000 < 2 * bound
    start = time.perf_counter()
    with pytest.raises(ValueError, match="possible decompression bomb") as caught:
        load_original(ImageSource(0, "bomb.png", lambda: Image.open(path)))
    assert "--max-image-pixels" in str(caught.value)
    assert time.perf_counter() - start < 1.0
