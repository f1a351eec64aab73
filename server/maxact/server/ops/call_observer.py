"""One interceptor for what every RPC needs watched: a request id (in the REQUEST_ID context
variable while the call runs, so deeper log lines carry it), one log line per call (method,
status code, milliseconds, peer as structured fields) and the standard gRPC server metrics."""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from maxact.server.ops.handlers import Handler, relay, same_shape
from maxact.server.ops.logs import REQUEST_ID
from maxact.server.ops.metrics import GRPC_HANDLED, GRPC_HANDLING_SECONDS, GRPC_STARTED

log = logging.getLogger("maxact.server.rpc")
REQUEST_ID_HEADER = "x-request-id"


def _code_name(context: grpc.aio.ServicerContext[Any, Any], failed: BaseException | None) -> str:
    """The status the call ended with: what the handler set or aborted with, else OK/CANCELLED."""
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        names = {c.value[0]: c.name for c in grpc.StatusCode}
        return names.get(code, str(code))
    if failed is None:
        return "OK"
    return "UNKNOWN" if isinstance(failed, Exception) else "CANCELLED"


def _rpc_type(handler: Handler) -> str:
    """The grpc_type label of the standard metrics."""
    if handler.unary_unary:
        return "unary"
    if handler.unary_stream:
        return "server_stream"
    return "client_stream" if handler.stream_unary else "bidi_stream"


@dataclass(frozen=True)
class _Call:
    """What is known of a call before it runs: its method, request id and metric labels."""

    method: str
    request_id: str
    labels: dict[str, str]


def _describe(details: grpc.HandlerCallDetails, handler: Handler) -> _Call:
    """The call's labels, and its request id: the client's x-request-id, else a fresh one."""
    method = details.method or "?"
    service, _, method_name = method.lstrip("/").rpartition("/")
    labels = {
        "grpc_type": _rpc_type(handler),
        "grpc_service": service,
        "grpc_method": method_name,
    }
    metadata = dict(details.invocation_metadata or ())
    request_id = str(metadata.get(REQUEST_ID_HEADER) or uuid.uuid4().hex[:16])
    return _Call(method, request_id, labels)


def _record_end(call: _Call, code: str, seconds: float, peer: str) -> None:
    """Count and time the finished call, and log its one line with the structured fields."""
    GRPC_HANDLED.labels(**call.labels, grpc_code=code).inc()
    GRPC_HANDLING_SECONDS.labels(**call.labels).observe(seconds)
    milliseconds = round(seconds * 1000, 2)
    fields = {
        "request_id": call.request_id,
        "method": call.method,
        "code": code,
        "ms": milliseconds,
        "peer": peer,
    }
    log.info("%s %s %.2f ms", call.method, code, milliseconds, extra=fields)


@contextmanager
def _watched(call: _Call, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
    """Time the call with its request id set, then count it and log one line with its final
    status."""
    # The peer is read while the call is alive: asking a call that the server has
    # already torn down (at shutdown) for its peer crashes the process.
    start, failed, peer = time.perf_counter(), None, context.peer()
    GRPC_STARTED.labels(**call.labels).inc()
    token = REQUEST_ID.set(call.request_id)
    try:
        yield
    except BaseException as exc:
        failed = exc
        raise
    finally:
        seconds = time.perf_counter() - start
        _record_end(call, _code_name(context, failed), seconds, peer)
        try:
            REQUEST_ID.reset(token)
        except ValueError:  # an async generator finished in another context
            REQUEST_ID.set("")


def _watching(handler: Handler, call: _Call) -> Handler:
    """`handler` with every behaviour run inside `_watched`, whatever its streaming shape."""

    def unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with _watched(call, context):
                result = behaviour(request, context)
                return await result if inspect.isawaitable(result) else result

        return wrapped

    def streaming(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(behaviour):  # writes through context.write()
            return unary(behaviour)

        async def wrapped(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            with _watched(call, context):
                async for item in relay(behaviour(request, context)):
                    yield item

        return wrapped

    return same_shape(handler, unary, streaming)


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """Every handled call watched; unknown methods (no handler) pass through untouched."""
        handler = await continuation(details)
        if handler is None:
            return handler
        return _watching(handler, _describe(details, handler))
