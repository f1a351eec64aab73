"""The operations run without a transport: core/ takes plain records and yields domain
events, and the server's error codes are gRPC's by name and number (the one mapping in
ops.status loses nothing)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from maxact.client.kinds import TopKMode
from maxact.server.core.topk import (
    Done,
    PatchReady,
    Progress,
    TopK,
    TopKEvent,
    TopKQuestion,
)
from maxact.server.core.validate import ServerState
from maxact.server.data.datasets import DatasetCatalog
from maxact.server.data.preprocess import Preprocessing
from maxact.server.errors import Code, ServiceError, invalid_argument
from maxact.server.models.registry import ModelRegistry
from maxact.server.ops.status import grpc_status
from maxact.server.patches.render import RenderOptions
from maxact.server.scan.neuron import NeuronQuery
from tests.datasets import write_images
from tests.onnx_models import bright_square_model, save


@pytest.mark.parametrize("code", list(Code))
def test_every_error_code_is_the_grpc_status_of_the_same_name_and_number(code: Code) -> None:
    assert grpc.StatusCode[code.name].value[0] == code.value


def test_the_grpc_status_of_an_error_carries_its_code_reason_and_message() -> None:
    status = grpc_status(invalid_argument("BAD_THING", "the thing is bad", thing="x"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == "the thing is bad"
    assert any(key == "grpc-status-details-bin" for key, _ in status.trailing_metadata)


def _events(state: ServerState, question: TopKQuestion, dataset: str) -> list[TopKEvent]:
    async def collect() -> list[TopKEvent]:
        return [event async for event in TopK(state).stream_dataset(question, dataset)]

    return asyncio.run(collect())


def _question(k: int, channel: int = 0) -> TopKQuestion:
    return TopKQuestion(
        model="net",
        neuron=NeuronQuery(layer="conv1", channel=channel, k=k, mode=TopKMode.IMAGE),
        preprocessing=Preprocessing(),
        render=RenderOptions(),
    )


@pytest.fixture
def state(model_root: Path, data_root: Path) -> ServerState:
    save(bright_square_model(32), model_root, "net")
    write_images(data_root / "small", 5, 32, seed=3)
    return ServerState(ModelRegistry(model_root, "cpu"), DatasetCatalog(data_root))


def test_a_topk_stream_without_grpc_yields_plain_events_ending_in_done(
    state: ServerState,
) -> None:
    events = _events(state, _question(k=3), "small")
    assert not [event for event in events if isinstance(event, Message)]
    patches = [event for event in events if isinstance(event, PatchReady)]
    assert [p.hit.rank for p in patches] == [1, 2, 3]
    assert all(p.patch.png.startswith(b"\x89PNG") for p in patches)
    last_progress = [event for event in events if isinstance(event, Progress)][-1]
    assert (last_progress.images_scanned, last_progress.images_total) == (5, 5)
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.images_scanned, done.query.k, done.query.mode) == (5, 3, TopKMode.IMAGE)


def test_a_bad_topk_question_without_grpc_raises_the_servers_own_error(
    state: ServerState,
) -> None:
    with pytest.raises(ServiceError) as caught:
        _events(state, _question(k=3, channel=7), "small")
    assert (caught.value.code, caught.value.reason) == (
        Code.INVALID_ARGUMENT,
        "CHANNEL_OUT_OF_RANGE",
    )
