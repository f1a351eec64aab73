"""Rebuild a gRPC method handler of the same shape around new behaviours (for interceptors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behaviour = Callable[..., Any]


def same_shape(
    handler: grpc.RpcMethodHandler,
    unary_response: Callable[[Behaviour], Behaviour],
    stream_response: Callable[[Behaviour], Behaviour],
) -> grpc.RpcMethodHandler:
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
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **shape)
