"""Rebuild a gRPC method handler of the same shape around new behaviours (for interceptors)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc

Behaviour = Callable[..., Any]
# The interceptors see every service's methods: request and response types vary per method.
# (Generic only in the type stubs: at run time grpc's class cannot be subscripted.)
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler


def same_shape(
    handler: Handler,
    unary_response: Callable[[Behaviour], Behaviour],
    stream_response: Callable[[Behaviour], Behaviour],
) -> Handler:
    """A handler like `handler` whose behaviour is `unary_response(original)` for the two
    single-response kinds and `stream_response(original)` for the two streaming-response ones."""
    shape = dict(
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **shape)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **shape)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **shape)
    assert handler.stream_stream is not None, "a method handler has one of the four behaviours"
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **shape)


async def relay(results: Any) -> AsyncIterator[Any]:
    """Yield what a streaming behaviour produces: grpc.aio accepts async generators and plain
    iterators alike, so every wrapper must pass both through."""
    if hasattr(results, "__aiter__"):
        async for item in results:
            yield item
    else:
        for item in results:
            yield item
