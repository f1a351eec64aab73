"""One interceptor for what every RPC needs watched: a request id, a structured log line
(JSON: request id, method, status code, milliseconds, peer), and the RPC metrics."""

from __future__ import annotations

import inspect
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from maxact.server.ops.handlers import same_shape
from maxact.server.ops.metrics import METRICS

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

        @contextmanager
        def watched(context: grpc.aio.ServicerContext) -> Iterator[None]:
            """Time the call, then count it and log one line with its final status."""
            # The peer is read while the call is alive: asking a call that the server has
            # already torn down (at shutdown) for its peer crashes the process.
            start, failed, peer = time.perf_counter(), None, context.peer()
            try:
                yield
            except BaseException as exc:
                failed = exc
                raise
            finally:
                seconds = time.perf_counter() - start
                code = _code_name(context, failed)
                METRICS.inc("maxact_rpc_requests_total", method=method, code=code)
                METRICS.observe("maxact_rpc_duration_seconds", seconds, method=method)
                line = {
                    "request_id": request_id,
                    "method": method,
                    "code": code,
                    "ms": round(seconds * 1000, 2),
                    "peer": peer,
                }
                log.info(json.dumps(line))

        def unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with watched(context):
                    result = behaviour(request, context)
                    return await result if inspect.isawaitable(result) else result

            return wrapped

        def streaming(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.iscoroutinefunction(behaviour):  # writes through context.write()
                return unary(behaviour)

            async def wrapped(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                with watched(context):
                    results = behaviour(request, context)
                    if hasattr(results, "__aiter__"):
                        async for item in results:
                            yield item
                    else:
                        for item in results:
                            yield item

            return wrapped

        return same_shape(handler, unary, streaming)
