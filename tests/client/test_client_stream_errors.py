"""TopKStream collects typed events; every RpcError becomes a MaxactError with its reason."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from maxact.client import MaxactError, TopKStream
from maxact.client import types as t
from maxact.client.errors import from_rpc_error
from maxact.v1 import common_pb2, topk_service_pb2


class FakeRpcError(grpc.RpcError):
    """What grpc raises: an RpcError that is also a Call with code, details and trailers."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str = "") -> None:
        self._code, self._details, self._trailers = code, details, ()
        if reason:
            info = any_pb2.Any()
            info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="maxact"))
            status = status_pb2.Status(code=code.value[0], message=details, details=[info])
            self._trailers = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return self._trailers


class FakeCall:
    """A server-stream call: yields messages, then optionally raises, and can be cancelled."""

    def __init__(self, messages, error: grpc.RpcError | None = None) -> None:
        self._messages = list(messages)
        self._error = error
        self.cancelled = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.cancelled:
            raise FakeRpcError(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        if self._messages:
            return self._messages.pop(0)
        if self._error is not None:
            raise self._error
        raise StopIteration

    def cancel(self) -> None:
        self.cancelled = True


def _hit(rank: int, score: float) -> topk_service_pb2.Hit:
    return topk_service_pb2.Hit(
        rank=rank,
        image=f"img{rank}.png",
        score=score,
        unit=common_pb2.Unit(y=1, x=2),
        box=common_pb2.Box(y0=0, x0=1, y1=5, x1=6),
        input_box=common_pb2.Box(y0=0, x0=0, y1=3, x1=3),
        channel=4,
    )


def _events():
    r = topk_service_pb2.StreamTopKResponse
    return [
        r(progress=topk_service_pb2.Progress(images_done=1, images_total=3)),
        r(skipped=topk_service_pb2.ImageSkipped(image="bad.jpg", reason="cannot decode")),
        r(partial=topk_service_pb2.PartialTopK(hits=[_hit(1, 2.0)], images_done=2)),
        r(progress=topk_service_pb2.Progress(images_done=3, images_total=3, images_failed=1)),
        r(patch=topk_service_pb2.Patch(hit=_hit(2, 1.0), png=b"png2")),
        r(patch=topk_service_pb2.Patch(hit=_hit(1, 2.0), png=b"png1")),
        r(),  # an event this client does not know: ignored
        r(
            done=topk_service_pb2.Done(
                images_scanned=3, images_failed=1, k=2, mode=topk_service_pb2.TOP_K_MODE_IMAGE
            )
        ),
    ]


def _stream(call: FakeCall) -> TopKStream:
    return TopKStream(call, model="m", layer="l", channel=4, k=2, mode="image", bottom=False)


def test_iteration_yields_typed_events_in_order() -> None:
    events = list(_stream(FakeCall(_events())))
    kinds = [type(e) for e in events]
    assert kinds == [
        t.Progress, t.ImageSkipped, t.PartialTopK, t.Progress, t.Patch, t.Patch, t.Done,
    ]  # fmt: skip
    assert events[4].hit == t.Hit(2, "img2.png", 1.0, (1, 2), (0, 1, 5, 6), (0, 0, 3, 3), 4)


def test_result_collects_patches_by_rank_and_skipped_images() -> None:
    stream = _stream(FakeCall(_events()))
    result = stream.result()
    assert [p.hit.rank for p in result.patches] == [1, 2]
    assert [p.png for p in result.patches] == [b"png1", b"png2"]
    assert result.skipped == (t.ImageSkipped("bad.jpg", "cannot decode"),)
    assert (result.images_scanned, result.images_failed, result.k, result.mode) == (
        3,
        1,
        2,
        "image",
    )
    assert stream.progress == t.Progress(3, 3, 1)


def test_result_after_partial_iteration_consumes_the_rest() -> None:
    stream = _stream(FakeCall(_events()))
    next(stream)
    assert len(stream.result().patches) == 2


def test_server_error_mid_stream_becomes_maxact_error_with_reason() -> None:
    error = FakeRpcError(grpc.StatusCode.NOT_FOUND, "model 'x' not found", "MODEL_NOT_FOUND")
    with pytest.raises(MaxactError) as info:
        _stream(FakeCall(_events()[:2], error)).result()
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.reason == "MODEL_NOT_FOUND"


def test_cancel_ends_iteration_quietly_and_cancels_the_call() -> None:
    call = FakeCall(_events())
    stream = _stream(call)
    next(stream)
    stream.cancel()
    assert call.cancelled and stream.cancelled
    assert list(stream) == []


def test_result_of_a_cancelled_stream_raises_cancelled() -> None:
    stream = _stream(FakeCall(_events()))
    stream.cancel()
    with pytest.raises(MaxactError) as info:
        stream.result()
    assert info.value.code == grpc.StatusCode.CANCELLED


def test_context_manager_cancels_an_unfinished_stream_on_exit() -> None:
    call = FakeCall(_events())
    with _stream(call) as stream:
        next(stream)
    assert call.cancelled


def test_context_manager_does_not_cancel_a_finished_stream() -> None:
    call = FakeCall(_events())
    with _stream(call) as stream:
        stream.result()
    assert not call.cancelled


def test_stream_without_done_is_an_error_not_a_silent_partial_result() -> None:
    with pytest.raises(MaxactError, match="done"):
        _stream(FakeCall(_events()[:5])).result()


def test_error_str_shows_code_reason_and_message() -> None:
    error = from_rpc_error(
        FakeRpcError(
            grpc.StatusCode.NOT_FOUND,
            "model 'x' not found under the model root",
            "MODEL_NOT_FOUND",
        )
    )
    assert str(error) == "NOT_FOUND (MODEL_NOT_FOUND): model 'x' not found under the model root"


def test_error_without_error_info_has_empty_reason() -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "boom"))
    assert (error.code, error.reason, str(error)) == (
        grpc.StatusCode.INTERNAL,
        "",
        "INTERNAL: boom",
    )


def test_unreachable_server_error_names_the_address() -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connect failed"), "h:1")
    assert "h:1" in str(error) and error.code == grpc.StatusCode.UNAVAILABLE


def test_code_pb2_values_match_grpc_status_codes() -> None:
    # the rich status carries the numeric code; the conversion relies on them agreeing
    assert grpc.StatusCode.NOT_FOUND.value[0] == code_pb2.NOT_FOUND
