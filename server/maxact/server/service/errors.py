"""Turn ServiceError (and surprises) into rich gRPC statuses, for unary and streaming handlers
(through `ops.status`, where the server's own codes become gRPC's)."""

from __future__ import annotations

import errno
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from maxact.server.errors import Code, ServiceError
from maxact.server.ops.status import grpc_status

log = logging.getLogger("maxact.server")


def _disk_full(exc: Exception) -> ServiceError | None:
    """A full disk (or quota) while writing an upload or a kept dataset is the server's
    resource running out, not a bug: RESOURCE_EXHAUSTED, and the server goes on serving."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ServiceError(
            Code.RESOURCE_EXHAUSTED,
            "DISK_FULL",
            "the server's disk is full; retry once space is freed",
        )
    return None


def _internal(exc: Exception, method: str) -> ServiceError:
    log.exception("unexpected error in %s", method)
    # the exception's text may hold server paths: the client gets its type, the log the rest
    return ServiceError(
        Code.INTERNAL,
        "INTERNAL",
        f"{method} failed unexpectedly ({type(exc).__name__}); the server log has the details",
    )


async def _abort(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    await context.abort_with_status(grpc_status(error))


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    """Abort with `exc` as a status: a ServiceError as it is, a surprise as INTERNAL (logged);
    an abort already under way passes through."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, ServiceError):
        await _abort(context, exc)
    await _abort(context, _disk_full(exc) or _internal(exc, method))


def rpc(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a servicer method so that every failure reaches the client as a proper status."""
    name = handler.__name__
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def streaming(
            self: Any, request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            try:
                async for item in handler(self, request, context):
                    yield item
            except Exception as exc:
                await _abort_for(exc, context, name)

        return streaming

    @functools.wraps(handler)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            await _abort_for(exc, context, name)

    return unary
