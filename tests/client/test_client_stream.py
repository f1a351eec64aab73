"""TopKStream against the real in-process server: typed events, result(), cancel, errors.

The server's ranking is checked in tests/server; here the client's side of the stream is: what
it yields, what it collects, and how it ends (done, cancelled, or failed).
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from maxact.client import Client, MaxactError, TopKStream
from maxact.client import types as t
from tests.onnx_models import bright_square_model, heavy_cnn, random_cnn, save

SIZE = 32
# (image id, brightness) of one 4x4 square at (8, 8) per image, plus one undecodable file.
SQUARES = [("a.png", 90), ("b.png", 250), ("c.png", 170), ("d.png", 30)]
CORRUPT = "bad.jpg"
HEAVY_IMAGES = 120


@pytest.fixture
def squares(model_root: Path, data_root: Path) -> Path:
    """Model "net" (bright_square_model) and dataset "sq": four squares and a corrupt file."""
    save(bright_square_model(SIZE), model_root, "net")
    dataset = data_root / "sq"
    dataset.mkdir()
    for name, brightness in SQUARES:
        pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
        pixels[8:12, 8:12] = brightness
        Image.fromarray(pixels).save(dataset / name)
    (dataset / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return dataset


@pytest.fixture
def heavy(model_root: Path, data_root: Path) -> Path:
    """Model "heavy" and dataset "many" of identical noise images: every image ties, so
    img_0000.png ranks first, and a full scan takes long enough (a second or more) for a test
    to act on a scan that is still running."""
    save(heavy_cnn(128), model_root, "heavy")
    dataset = data_root / "many"
    dataset.mkdir()
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buffer, "PNG")
    for i in range(HEAVY_IMAGES):
        (dataset / f"img_{i:04d}.png").write_bytes(buffer.getvalue())
    return dataset


def _squares_stream(client: Client, k: int = 3) -> TopKStream:
    return client.topk("net", "conv1", 0, dataset="sq", k=k)


def _heavy_stream(client: Client, k: int = 1) -> TopKStream:
    return client.topk("heavy", "relu5", 0, dataset="many", k=k)


def _until_scanning(stream: TopKStream) -> list[t.TopKEvent]:
    """Consume events until the server reports a scanned batch; returns what was consumed."""
    seen: list[t.TopKEvent] = []
    for event in stream:
        seen.append(event)
        if isinstance(event, t.Progress) and event.images_done > 0:
            return seen
    raise AssertionError(f"the stream ended before any image was scanned: {seen}")


def _scan_threads() -> list[str]:
    return [th.name for th in threading.enumerate() if th.name.startswith("maxact-scan")]


def _scan_threads_after(seconds: float) -> list[str]:
    """The server's scan threads (it runs in this process) left after waiting up to seconds."""
    deadline = time.monotonic() + seconds
    while _scan_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return _scan_threads()


def test_events_arrive_typed_in_order_progress_then_patches_by_rank_then_done(
    client: Client, squares: Path
) -> None:
    events = list(_squares_stream(client))
    kinds = [type(event) for event in events]
    assert kinds[0] is t.Progress and kinds[-1] is t.Done and kinds.count(t.Done) == 1
    first_patch = kinds.index(t.Patch)
    assert set(kinds[first_patch:-1]) == {t.Patch}, kinds  # patches come after the scan
    assert set(kinds[:first_patch]) <= {t.Progress, t.PartialTopK, t.ImageSkipped}
    assert [e.hit.rank for e in events if isinstance(e, t.Patch)] == [1, 2, 3]
    assert [e.images_done for e in events if isinstance(e, t.Progress)] == sorted(
        e.images_done for e in events if isinstance(e, t.Progress)
    )
    skipped = [e for e in events if isinstance(e, t.ImageSkipped)]
    assert [e.image for e in skipped] == [CORRUPT] and skipped[0].reason
    done = events[-1]
    assert (done.images_scanned, done.images_failed, done.k, done.mode) == (
        len(SQUARES),
        1,
        3,
        "image",
    )


def test_result_collects_the_streamed_patches_by_rank_and_the_skipped_images(
    client: Client, squares: Path
) -> None:
    events = list(_squares_stream(client))
    result = _squares_stream(client).result()
    streamed = sorted((e for e in events if isinstance(e, t.Patch)), key=lambda p: p.hit.rank)
    assert result.patches == tuple(streamed)
    assert result.hits == tuple(p.hit for p in streamed)
    assert [h.image for h in result.hits] == ["b.png", "c.png", "a.png"]
    assert all(p.png.startswith(b"\x89PNG") for p in result.patches)
    assert result.skipped == tuple(e for e in events if isinstance(e, t.ImageSkipped))
    assert (result.model, result.layer, result.channel, result.k, result.mode) == (
        "net",
        "conv1",
        0,
        3,
        "image",
    )
    assert (result.images_scanned, result.images_failed, result.bottom) == (4, 1, False)


def test_result_after_partial_iteration_consumes_the_rest(client: Client, squares: Path) -> None:
    stream = _squares_stream(client)
    first = next(stream)
    assert isinstance(first, t.Progress)
    result = stream.result()
    assert [h.rank for h in result.hits] == [1, 2, 3]
    assert stream.progress == t.Progress(images_done=4, images_total=5, images_failed=1)


def test_position_mode_returns_several_hits_from_one_image_and_reports_the_mode(
    client: Client, model_root: Path, data_root: Path
) -> None:
    save(bright_square_model(SIZE), model_root, "net")
    (data_root / "two").mkdir()
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[2:6, 2:6] = 250
    pixels[20:24, 24:28] = 200
    Image.fromarray(pixels).save(data_root / "two" / "both.png")
    Image.fromarray(np.full((SIZE, SIZE, 3), 10, dtype=np.uint8)).save(data_root / "two" / "x.png")

    by_position = client.topk("net", "conv1", 0, dataset="two", k=2, mode="position").result()
    assert by_position.mode == "position"
    assert [(h.image, h.box) for h in by_position.hits] == [
        ("both.png", (2, 2, 6, 6)),
        ("both.png", (20, 24, 24, 28)),
    ]
    by_image = client.topk("net", "conv1", 0, dataset="two", k=2).result()
    assert [h.image for h in by_image.hits] == ["both.png", "x.png"]


def test_patch_larger_than_grpc_default_4_mib_message_limit_arrives_whole(
    client: Client, model_root: Path, data_root: Path
) -> None:
    # a flat (Gemm) neuron's patch is the whole image; noise does not compress, so the PNG of
    # a 1400x1400 image is ~5.9 MB, over gRPC's 4 MiB default receive limit
    save(random_cnn(size=32), model_root, "cnn")
    (data_root / "big").mkdir()
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(data_root / "big" / "noise.png", compress_level=1)

    result = client.topk("cnn", "logits", 0, dataset="big", k=1).result()
    (patch,) = result.patches
    assert len(patch.png) > 4 * 1024 * 1024
    assert patch.hit.box == (0, 0, 1400, 1400)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(patch.png))), pixels)


def test_cancel_ends_iteration_quietly_and_stops_the_server_scan(
    client: Client, heavy: Path
) -> None:
    stream = _heavy_stream(client)
    _until_scanning(stream)
    assert _scan_threads(), "the scan should still be running"
    stream.cancel()
    assert stream.cancelled
    assert list(stream) == []  # no exception, no more events
    assert _scan_threads_after(2.0) == []


def test_result_of_a_cancelled_stream_raises_cancelled(client: Client, heavy: Path) -> None:
    stream = _heavy_stream(client)
    _until_scanning(stream)
    stream.cancel()
    with pytest.raises(MaxactError) as caught:
        stream.result()
    assert caught.value.code == grpc.StatusCode.CANCELLED
    assert "cancelled" in str(caught.value)
    assert _scan_threads_after(2.0) == []


def test_context_manager_cancels_an_unfinished_stream_on_exit(client: Client, heavy: Path) -> None:
    with pytest.raises(KeyboardInterrupt), _heavy_stream(client) as stream:
        _until_scanning(stream)
        raise KeyboardInterrupt  # a user giving up half way
    assert stream.cancelled
    assert _scan_threads_after(2.0) == []
    assert [m.name for m in client.list_models()] == ["heavy"]  # the server still answers


def test_context_manager_leaves_a_finished_stream_and_its_result_alone(
    client: Client, squares: Path
) -> None:
    with _squares_stream(client) as stream:
        result = stream.result()
    assert not stream.cancelled
    assert stream.result() == result  # a cancelled stream would raise CANCELLED here


def test_error_before_the_first_event_is_raised_by_iteration_with_its_reason(
    client: Client, squares: Path
) -> None:
    stream = client.topk("net", "conv7", 0, dataset="sq")
    events = []
    with pytest.raises(MaxactError) as caught:
        events.extend(stream)
    assert events == []
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "LAYER_NOT_FOUND"
    assert str(caught.value) == f"INVALID_ARGUMENT (LAYER_NOT_FOUND): {caught.value.message}"
    assert "conv7" in caught.value.message


def test_server_error_mid_stream_becomes_maxact_error_with_reason(
    client: Client, heavy: Path
) -> None:
    # img_0000.png is the top hit; it vanishes after it was scanned and before the server
    # crops its patch, which fails the stream after progress events were delivered
    stream = _heavy_stream(client)
    before = _until_scanning(stream)
    (heavy / "img_0000.png").unlink()
    with pytest.raises(MaxactError) as caught:
        before.extend(stream)
    assert any(isinstance(e, t.Progress) and e.images_done > 0 for e in before)
    assert not any(isinstance(e, (t.Patch, t.Done)) for e in before)
    assert caught.value.reason, "the server's ErrorInfo reason must reach the client"
    assert "img_0000.png" in caught.value.message


def test_client_timeout_expiring_mid_stream_is_deadline_exceeded(
    client: Client, server: object, heavy: Path
) -> None:
    png = (heavy / "img_0000.png").read_bytes()
    for i in range(HEAVY_IMAGES, 4 * HEAVY_IMAGES):  # a scan of several seconds
        (heavy / f"img_{i:04d}.png").write_bytes(png)
    client.get_model("heavy")  # load the model first: the deadline is for the scan
    with Client(server.address, timeout=1.0) as hasty:  # type: ignore[attr-defined]
        events: list[t.TopKEvent] = []
        with pytest.raises(MaxactError) as caught:
            events.extend(_heavy_stream(hasty))
    assert events and not any(isinstance(e, t.Done) for e in events)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.reason == ""
    assert _scan_threads_after(2.0) == []
