"""Fuzzing every RPC through the real server: request messages of every method, raw bytes,
image bytes and model files. Whatever a client sends, the answer is never INTERNAL or UNKNOWN
and names no server folder; afterwards the server is still SERVING and answers a known top-k
correctly."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from maxact.client import Client, MaxactError
from maxact.server.app import SERVICE_NAMES, start_server
from maxact.v1 import topk_service_pb2
from tests.fuzz.strategies import image_bytes, messages, model_bytes
from tests.onnx_models import bright_square_model, save
from tests.security.robust_helpers import dynamic_model

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
BRIGHTNESS = (50, 150, 100)  # image i is flat grey BRIGHTNESS[i]
# every maxact service the server registers, found by name: a new service is fuzzed too
METHODS = [
    method
    for name in SERVICE_NAMES
    for method in descriptor_pool.Default().FindServiceByName(name).methods
]
_names = itertools.count()
_ROOTS: list[str] = []  # the server's folders: no error may name them


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("fuzz")
    models, data = root / "models", root / "data"
    save(bright_square_model(64), models, "net")
    save(dynamic_model(), models, "dyn")
    (data / "ds").mkdir(parents=True)
    for i, value in enumerate(BRIGHTNESS):
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(data / "ds" / f"img_{i}.png")
    _ROOTS[:] = [str(root), str(root.resolve())]
    running = start_server(models, data, port=0, device="cpu")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def channel(fuzzed_server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(fuzzed_server.address) as opened:
        yield opened


def _path(method: Any) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _call(channel: grpc.Channel, method: Any, requests: list[Any]) -> None:
    """One call with `requests` (one for unary-request methods); a few streamed answers are
    read, then the call is cancelled. Fails on INTERNAL or UNKNOWN."""
    path = _path(method)
    serialize = (
        (lambda m: m) if isinstance(requests[0], bytes) else (lambda m: m.SerializeToString())
    )
    try:
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(path, request_serializer=serialize)(
                iter(requests), timeout=60
            )
        elif method.client_streaming:
            channel.stream_unary(path, request_serializer=serialize)(iter(requests), timeout=60)
            return
        elif method.server_streaming:
            call = channel.unary_stream(path, request_serializer=serialize)(requests[0], timeout=60)
        else:
            channel.unary_unary(path, request_serializer=serialize)(requests[0], timeout=60)
            return
        for _ in itertools.islice(call, 30):
            pass
        call.cancel()
    except grpc.RpcError as error:
        code = error.code()
        details = error.details() or ""
        assert code not in FORBIDDEN, f"{path}: {code.name}: {details}"
        assert not any(root in details for root in _ROOTS), f"{path} leaks a path: {details}"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@given(data=st.data())
def test_any_request_message_of_any_method_is_never_internal(
    channel: grpc.Channel, method: Any, data: st.DataObject
) -> None:
    request = messages(method.input_type)
    count = data.draw(st.integers(1, 3)) if method.client_streaming else 1
    _call(channel, method, [data.draw(request) for _ in range(count)])


@given(
    method=st.sampled_from(METHODS),
    payload=st.lists(st.binary(max_size=512), min_size=1, max_size=3),
)
def test_raw_bytes_to_any_method_are_never_internal(
    channel: grpc.Channel, method: Any, payload: list[bytes]
) -> None:
    _call(channel, method, payload if method.client_streaming else payload[:1])


@given(images=st.lists(image_bytes(), min_size=1, max_size=4))
def test_any_image_bytes_streamed_to_a_scan_are_never_internal(
    channel: grpc.Channel, images: list[bytes]
) -> None:
    query = topk_service_pb2.TopKQuery(model="net", layer="conv1", channel=0, k=3)
    requests = [topk_service_pb2.StreamTopKImagesRequest(query=query)] + [
        topk_service_pb2.StreamTopKImagesRequest(
            image=topk_service_pb2.ClientImage(id=f"{i}.png", data=data)
        )
        for i, data in enumerate(images)
    ]
    method = topk_service_pb2.DESCRIPTOR.services_by_name["TopKService"].methods_by_name[
        "StreamTopKImages"
    ]
    _call(channel, method, requests)


@pytest.fixture(scope="module")
def fuzz_client(fuzzed_server: Any) -> Iterator[Client]:
    with Client(fuzzed_server.address, timeout=60) as client:
        yield client


@given(data=model_bytes(bright_square_model(64)))
def test_any_model_file_uploaded_and_used_is_never_internal(
    fuzz_client: Client, tmp_path: Path, data: bytes
) -> None:
    name = f"fuzzed_{next(_names)}"
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(data)
    calls = [
        lambda: fuzz_client.upload_model(path, name),
        lambda: fuzz_client.get_model(name),
        lambda: fuzz_client.topk(name, "conv1", 0, dataset="ds", k=2).result(),
        lambda: fuzz_client.unload_model(name),
    ]
    for call in calls:
        try:
            call()
        except MaxactError as error:
            assert error.code not in FORBIDDEN, str(error)
            assert not any(root in error.message for root in _ROOTS), str(error)


def test_zz_after_fuzzing_the_server_is_serving_and_answers_a_known_topk(
    fuzzed_server: Any, channel: grpc.Channel
) -> None:
    """Runs last in this module: the fuzzing above left the server healthy and correct."""
    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", *SERVICE_NAMES]:
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with Client(fuzzed_server.address, timeout=60) as client:
        result = client.topk("net", "conv1", 0, dataset="ds", k=2).result()
    # conv1 channel 0 is the mean brightness of its window / 255 (see bright_square_model)
    assert [hit.image for hit in result.hits] == ["img_1.png", "img_2.png"]
    assert [hit.score for hit in result.hits] == pytest.approx([150 / 255, 100 / 255], rel=1e-5)
    assert Path  # the module's imports are all used
