"""One interceptor for what every RPC needs watched: a request id, a structured log line
(JSON: request id, method, status code, milliseconds, peer), and the RPC metrics."""

from __future__ import annotations

import inspect
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .metrics import METRICS

log = logging.getLogger("maxact.server.rpc")
REQUEST_ID_HEADER = "x-request-id"


def _code_name(context: grpc.aio.ServicerContext, failed: BaseException | None) -> str:
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


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method or "?"
        metadata = dict(details.invocation_metadata or ())
        request_id = str(metadata.get(REQUEST_ID_HEADER) or uuid.uuid4().hex[:16])

        def finish(
            context: grpc.aio.ServicerContext, start: float, failed: BaseException | None
        ) -> None:
            seconds = time.perf_counter() - start
            code = _code_name(context, failed)
            METRICS.inc("maxact_rpc_requests_total", method=method, code=code)
            METRICS.observe("maxact_rpc_duration_seconds", seconds, method=method)
            log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": method,
                        "code": code,
                        "ms": round(seconds * 1000, 2),
                        "peer": context.peer(),
                    }
                )
            )

        def unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                start, failed = time.perf_counter(), None
                try:
                    result = behaviour(request, context)
                    return await result if inspect.isawaitable(result) else result
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    finish(context, start, failed)

            return wrapped

        def streaming(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.iscoroutinefunction(behaviour):  # writes through context.write()
                return unary(behaviour)

            async def wrapped(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                start, failed = time.perf_counter(), None
                try:
                    results = behaviour(request, context)
                    if hasattr(results, "__aiter__"):
                        async for item in results:
                            yield item
                    else:
                        for item in results:
                            yield item
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    finish(context, start, failed)

            return wrapped

        shape = dict(
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **shape)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **shape)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **shape)
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **shape)
