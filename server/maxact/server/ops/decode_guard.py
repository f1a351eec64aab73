"""Requests that do not decode get INVALID_ARGUMENT, without a traceback in the log.

grpc's own decoder answers a message that is not valid protobuf with UNKNOWN (unary requests)
or lets the DecodeError surface inside the handler (INTERNAL), and logs a traceback each time:
a client sending garbage would fill the log. This interceptor decodes with a deserializer
that turns a DecodeError into a marker, and the handler refuses the marker as the client's
error (REQUEST_UNDECODABLE), for every request message of unary and streaming calls alike.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from maxact.server.errors import invalid_argument
from maxact.server.ops.handlers import Handler, relay
from maxact.server.ops.status import grpc_status


class Undecodable:
    """Stands for a request message that did not decode."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _error(request: Undecodable) -> Any:
    return invalid_argument(
        "REQUEST_UNDECODABLE",
        f"the request message is not a valid protobuf message of this method's type "
        f"({str(request.error)[:160]})",
    )


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, RecursionError) as exc:
            return Undecodable(exc)

    return deserialize


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise _error(request)
        yield request


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        shape = dict(
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_unary_in(handler.unary_unary), **shape)
        if handler.unary_stream:
            streaming = _unary_in_stream_out(handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(streaming, **shape)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_stream_in(handler.stream_unary), **shape)
        assert handler.stream_stream is not None  # a handler has exactly one of the four
        return grpc.stream_stream_rpc_method_handler(_stream_in(handler.stream_stream), **shape)


async def _abort(context: grpc.aio.ServicerContext, request: Undecodable) -> None:
    await context.abort_with_status(grpc_status(_error(request)))


def _unary_in(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await _abort(context, request)
        result = behaviour(request, context)
        return await result if inspect.isawaitable(result) else result

    return unary


def _unary_in_stream_out(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(behaviour):  # it writes through context.write()
        return _unary_in(behaviour)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await _abort(context, request)
        async for item in relay(behaviour(request, context)):
            yield item

    return stream


def _stream_in(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        return behaviour(_checked_stream(requests), context)

    return call
