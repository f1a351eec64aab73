"""StreamTopKImages through the real in-process server and the real client: images the client
streams give exactly the top-k the same images give as a server dataset; per-image errors are
reported and skipped; stream-level mistakes are INVALID_ARGUMENT; cancelling stops the scan.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from maxact.client import Client, MaxactError, Preprocessing, collect_images
from maxact.client import types as t
from maxact.client.cli.main import main
from maxact.client.errors import from_rpc_error
from maxact.server.data.datasets import list_image_ids
from maxact.v1 import topk_service_pb2 as pb
from maxact.v1 import topk_service_pb2_grpc
from tests.onnx_models import bright_square_model, heavy_cnn, random_cnn, save
from tests.threads import scan_threads, scan_threads_after

SIZE = 32
CORRUPT = "b/broken.png"


def _image(rng: np.random.Generator, height: int, width: int) -> bytes:
    """Dim noise with one bright square somewhere: every image ranks differently."""
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    y, x = rng.integers(0, height - 6), rng.integers(0, width - 6)
    pixels[y : y + 6, x : x + 6] = rng.integers(80, 256)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def world(model_root: Path, data_root: Path) -> Path:
    """Models "net" (bright squares) and "cnn" (random weights); dataset "mix": 40 images of
    several sizes in nested folders (more than two batches) and one corrupt file."""
    save(bright_square_model(SIZE), model_root, "net")
    save(random_cnn(size=SIZE), model_root, "cnn")
    dataset = data_root / "mix"
    rng = np.random.default_rng(7)
    folders = ["", "a/", "b/", "b/c/"]
    sizes = [(32, 32), (48, 40), (64, 64), (30, 50)]
    for i in range(40):
        path = dataset / f"{folders[i % 4]}img_{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_image(rng, *sizes[(i // 4) % 4]))
    (dataset / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    return dataset


CASES = {
    "image_mode": dict(model="net", layer="conv1", channel=0, k=5),
    "position_mode": dict(model="net", layer="conv1", channel=0, k=7, mode="position"),
    "bottom_k": dict(model="net", layer="conv1", channel=1, k=5, bottom=True),
    "position_bottom_pooled": dict(
        model="net", layer="pool1", channel=0, k=6, mode="position", bottom=True
    ),
    "random_cnn_image_mode": dict(model="cnn", layer="relu_b", channel=2, k=9),
    "random_cnn_position_capped": dict(
        model="cnn", layer="conv_a", channel=5, k=8, mode="position", per_image_cap=2
    ),
    "random_cnn_bottom_k": dict(model="cnn", layer="conv_b", channel=3, k=4, bottom=True),
    "flat_index": dict(model="cnn", layer="logits", channel=1, k=3),
    "single_unit": dict(model="cnn", layer="conv_b", channel=0, k=5, unit=(2, 3)),
    "single_unit_bottom": dict(
        model="cnn", layer="conv_b", channel=0, k=5, unit=(2, 3), bottom=True
    ),
}


def _split(case: dict) -> tuple[tuple, dict]:
    options = dict(case)
    return (options.pop("model"), options.pop("layer"), options.pop("channel")), options


@pytest.mark.parametrize("name", list(CASES))
def test_streamed_images_give_the_same_topk_as_the_same_images_as_a_dataset(
    client: Client, world: Path, name: str
) -> None:
    args, options = _split(CASES[name])
    served = client.topk(*args, dataset="mix", **options).result()
    streamed = client.topk_images(*args, [world], **options).result()
    assert len(served.hits) == options["k"]
    # ids, ranks, scores, units, boxes (original and input), channels, and the patch bytes
    assert streamed.patches == served.patches
    assert streamed == served


def test_streamed_bytes_with_resizing_preprocessing_match_the_dataset(
    client: Client, world: Path
) -> None:
    prep = Preprocessing(size=(SIZE, SIZE), scale=1 / 255)
    pairs = [(image_id, path.read_bytes()) for image_id, path in collect_images([world])]
    served = client.topk("net", "conv1", 0, dataset="mix", k=6, preprocessing=prep).result()
    streamed = client.topk_images("net", "conv1", 0, pairs, k=6, preprocessing=prep).result()
    assert streamed == served


def test_client_ids_and_order_follow_the_dataset_rules(world: Path, tmp_path: Path) -> None:
    (world / ".hidden.png").write_bytes(b"x")
    (world / "notes.txt").write_text("not an image")
    collected = collect_images([world])
    assert [image_id for image_id, _ in collected] == list_image_ids(world)
    assert all(path == world / image_id for image_id, path in collected)
    single = world / "a" / "img_01.png"
    assert collect_images([single]) == [("img_01.png", single)]
    # several arguments: concatenated in the order given
    assert collect_images([single, world / "b" / "c"])[:2] == [
        ("img_01.png", single),
        ("img_03.png", world / "b" / "c" / "img_03.png"),
    ]
    with pytest.raises(ValueError, match=r"duplicate image id 'img_01\.png'"):
        collect_images([single, world / "a"])
    with pytest.raises(ValueError, match="no such file or folder"):
        collect_images([tmp_path / "missing"])


def test_progress_reports_images_received_so_far_as_total(client: Client, world: Path) -> None:
    events = list(client.topk_images("net", "conv1", 0, [world], k=3))
    progress = [e for e in events if isinstance(e, t.Progress)]
    totals = [p.images_total for p in progress]
    assert totals == sorted(totals) and totals[-1] == 41
    assert all(p.images_done + p.images_failed <= p.images_total for p in progress)
    assert progress[-1] == t.Progress(images_done=40, images_total=41, images_failed=1)


def test_corrupt_image_in_the_stream_is_reported_skipped_and_the_scan_goes_on(
    client: Client, world: Path
) -> None:
    good = (world / "img_00.png").read_bytes()
    pairs = [("one.png", good), ("junk.jpg", b"\xff\xd8\xff\xe0 not a jpeg"), ("two.png", good)]
    events = list(client.topk_images("net", "conv1", 0, pairs, k=3))
    skipped = [e for e in events if isinstance(e, t.ImageSkipped)]
    assert [e.image for e in skipped] == ["junk.jpg"] and "cannot read image" in skipped[0].reason
    done = events[-1]
    assert isinstance(done, t.Done)
    assert (done.images_scanned, done.images_failed, done.k, done.mode) == (2, 1, 3, "image")
    patches = [e for e in events if isinstance(e, t.Patch)]
    # identical images tie: the one sent first ranks first
    assert [p.hit.image for p in patches] == ["one.png", "two.png"]


def test_ties_go_to_the_image_the_client_sent_first(client: Client, world: Path) -> None:
    data = (world / "img_00.png").read_bytes()
    forward = client.topk_images("net", "conv1", 0, [("z.png", data), ("a.png", data)], k=1)
    backward = client.topk_images("net", "conv1", 0, [("a.png", data), ("z.png", data)], k=1)
    assert [h.image for h in forward.result().hits] == ["z.png"]
    assert [h.image for h in backward.result().hits] == ["a.png"]


def _raw_stream(server: object, messages: list[pb.StreamTopKImagesRequest]) -> MaxactError:
    """Send raw request messages with the plain gRPC stub; the error the server answers."""
    address = server.address  # type: ignore[attr-defined]
    with grpc.insecure_channel(address) as channel:
        stub = topk_service_pb2_grpc.TopKServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.StreamTopKImages(iter(messages), timeout=30))
    return from_rpc_error(caught.value, address)  # type: ignore[arg-type]


def test_first_message_not_a_query_is_invalid_argument_naming_it(
    server: object, world: Path
) -> None:
    image = pb.ClientImage(id="x.png", data=(world / "img_00.png").read_bytes())
    error = _raw_stream(server, [pb.StreamTopKImagesRequest(image=image)])
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "QUERY_REQUIRED"
    assert "must be a query, got a image message" in error.message
    empty = _raw_stream(server, [])
    assert (empty.code, empty.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "QUERY_REQUIRED")
    assert "got no message" in empty.message


def test_a_second_query_instead_of_an_image_is_invalid_argument(
    server: object, world: Path
) -> None:
    query = pb.TopKQuery(model="net", layer="conv1", channel=0, k=1)
    error = _raw_stream(
        server, [pb.StreamTopKImagesRequest(query=query), pb.StreamTopKImagesRequest(query=query)]
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_EXPECTED")


def test_query_is_validated_exactly_like_the_dataset_scan(client: Client, world: Path) -> None:
    data = (world / "img_00.png").read_bytes()
    for args, options in [
        (("net", "conv7", 0), {}),
        (("net", "conv1", 9), {}),
        (("net", "conv1", 0), {"k": 5000}),
        (("missing", "conv1", 0), {}),
    ]:
        with pytest.raises(MaxactError) as served:
            client.topk(*args, dataset="mix", **options).result()
        with pytest.raises(MaxactError) as streamed:
            client.topk_images(*args, [("x.png", data)], **options).result()
        assert (streamed.value.code, streamed.value.reason, streamed.value.message) == (
            served.value.code,
            served.value.reason,
            served.value.message,
        )


def test_duplicate_image_ids_are_invalid_argument(client: Client, world: Path) -> None:
    data = (world / "img_00.png").read_bytes()
    pairs = [("a.png", data), ("b.png", data), ("a.png", data)]
    with pytest.raises(MaxactError) as caught:
        client.topk_images("net", "conv1", 0, pairs).result()
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "DUPLICATE_IMAGE_ID"
    assert "'a.png'" in caught.value.message


def test_empty_image_id_is_invalid_argument(client: Client, world: Path) -> None:
    data = (world / "img_00.png").read_bytes()
    with pytest.raises(MaxactError) as caught:
        client.topk_images("net", "conv1", 0, [("a.png", data), ("", data)]).result()
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "IMAGE_ID_REQUIRED",
    )


def test_unreadable_local_file_is_raised_and_cancels_the_scan(
    client: Client, world: Path, tmp_path: Path
) -> None:
    pairs = [("ok.png", world / "img_00.png"), ("gone.png", tmp_path / "gone.png")]
    with pytest.raises(FileNotFoundError):
        client.topk_images("net", "conv1", 0, pairs).result()
    assert scan_threads_after(1.0) == []


@pytest.fixture
def heavy_png(model_root: Path) -> bytes:
    save(heavy_cnn(128), model_root, "heavy")
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_cancel_during_the_scan_stops_the_server_threads(client: Client, heavy_png: bytes) -> None:
    images = ((f"img_{i:04d}.png", heavy_png) for i in range(400))  # several seconds of scan
    stream = client.topk_images("heavy", "relu5", 0, images, k=1)
    for event in stream:
        if isinstance(event, t.Progress) and event.images_done > 0:
            break
    assert scan_threads(), "the scan should still be running"
    stream.cancel()
    assert list(stream) == []
    assert scan_threads_after(1.0) == []


def test_cancel_while_the_server_waits_for_the_next_image_stops_its_threads(
    client: Client, heavy_png: bytes
) -> None:
    release = threading.Event()

    def slow_images() -> Iterator[tuple[str, bytes]]:
        for i in range(3):
            yield f"img_{i}.png", heavy_png
        release.wait(30)  # the client has nothing more to send for now

    stream = client.topk_images("heavy", "relu5", 0, slow_images(), k=1)
    try:
        assert isinstance(next(stream), t.Progress)
        time.sleep(0.3)  # the server reads the three images and waits for a fourth
        assert scan_threads(), "the scan should be waiting for images"
        stream.cancel()
        assert scan_threads_after(1.0) == []
    finally:
        release.set()


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("flags", [[], ["--mode", "position", "-k", "6"], ["--bottom"]])
def test_cli_topk_images_json_and_out_equal_topk_dataset(
    server: object,
    world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
) -> None:
    common = ["--server", server.address, "topk", "net", "conv1", "--channel", "0", *flags]  # type: ignore[attr-defined]
    served = _cli_json(capsys, *common, "--dataset", "mix", "--json", "--out", str(tmp_path / "d"))
    streamed = _cli_json(
        capsys, *common, "--images", str(world), "--json", "--out", str(tmp_path / "i")
    )
    assert streamed == served
    files = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "i").iterdir()) and "montage.png" in files
    for name in files:
        assert (tmp_path / "i" / name).read_bytes() == (tmp_path / "d" / name).read_bytes()


def test_cli_topk_images_of_single_files_uses_their_base_names(
    server: object, world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [world / "a" / "img_01.png", world / "b" / "c" / "img_03.png"]
    document = _cli_json(
        capsys,
        *["--server", server.address, "topk", "net", "conv1", "--channel", "0", "-k", "2"],  # type: ignore[attr-defined]
        *["--images", *map(str, files), "--json"],
    )
    assert sorted(r["image"] for r in document["results"]) == ["img_01.png", "img_03.png"]
    assert document["images_scanned"] == 2


def test_cli_topk_needs_exactly_one_of_dataset_and_images(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["topk", "net", "conv1", "--channel", "0"]
    with pytest.raises(SystemExit) as neither:
        main(base)
    with pytest.raises(SystemExit) as both:
        main([*base, "--dataset", "mix", "--images", str(world)])
    assert neither.value.code == both.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
