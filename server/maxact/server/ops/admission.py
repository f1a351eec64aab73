"""Admission control: at most N maxact calls run at once; the next get RESOURCE_EXHAUSTED.

grpc's own `maximum_concurrent_rpcs` cancels the calls over its limit (CANCELLED, not the
documented RESOURCE_EXHAUSTED) and counts health checks too, so a load balancer's probe
would declare a busy but healthy server dead. This interceptor counts only maxact calls:
health and reflection are always answered. The count is taken when a call's handler starts
and released when it ends (the event loop runs one coroutine at a time: no lock needed).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from maxact.server.ops.handlers import Handler, relay, same_shape
from maxact.server.ops.slots import Slots
from maxact.server.ops.status import grpc_status

EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Refuses maxact calls beyond the limit in flight with RESOURCE_EXHAUSTED; `slots` may
    be shared with the HTTP face, so the limit holds over both."""

    def __init__(self, limit: int, slots: Slots | None = None) -> None:
        self.slots = slots or Slots(limit)

    @property
    def limit(self) -> int:
        return self.slots.limit

    @property
    def in_flight(self) -> int:
        return self.slots.in_flight

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        return same_shape(handler, self._admitted_unary, self._admitted_stream)

    def _refusal(self) -> Any:
        return grpc_status(self.slots.refusal())

    def _admitted_unary(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if not self.slots.try_take():
                await context.abort_with_status(self._refusal())
            try:
                result = behaviour(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                self.slots.release()

        return unary

    def _admitted_stream(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(behaviour):  # it writes through context.write()
            return self._admitted_unary(behaviour)

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if not self.slots.try_take():
                await context.abort_with_status(self._refusal())
            try:
                async for item in relay(behaviour(request, context)):
                    yield item
            finally:
                self.slots.release()

        return stream
