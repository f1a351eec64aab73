"""Optional bearer-token authentication, as one grpc.aio server interceptor.

Every RPC must carry `authorization: Bearer <token>` except the standard health service, which
load balancers and orchestrators probe without credentials. Refused calls get UNAUTHENTICATED
with an ErrorInfo reason (TOKEN_MISSING / TOKEN_INVALID) like every other maxact error. The
comparison is constant-time so the token cannot be guessed byte by byte from response times.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from maxact.server.errors import Code, ServiceError
from maxact.server.ops.handlers import Handler, same_shape
from maxact.server.ops.status import grpc_status

AUTH_HEADER = "authorization"
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)


def read_token(path: Path) -> str:
    """The token in a file (surrounding whitespace stripped); an empty file is refused."""
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    if any(ch.isspace() for ch in token):
        raise ValueError(f"token file {path}: the token must not contain whitespace")
    return token


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only with the right bearer token (health checks always pass)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let everyone in")
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method or ""
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        error = self._check(handler_call_details.invocation_metadata or ())
        if error is None:
            return handler
        return _refusing(handler, error)

    def _check(self, metadata: Any) -> ServiceError | None:
        values = [value for key, value in metadata if key == AUTH_HEADER]
        if not values:
            return _unauthenticated(
                "TOKEN_MISSING",
                "this server requires a token: send metadata 'authorization: Bearer <token>' "
                "(maxact: --token-file F or MAXACT_TOKEN)",
            )
        given = values[0].encode() if isinstance(values[0], str) else bytes(values[0])
        if len(values) != 1 or not hmac.compare_digest(given, self._expected):
            return _unauthenticated("TOKEN_INVALID", "the bearer token is not valid")
        return None


def _unauthenticated(reason: str, message: str) -> ServiceError:
    return ServiceError(Code.UNAUTHENTICATED, reason, message)


def _refusing(handler: Handler, error: ServiceError) -> Handler:
    """A handler of the same shape as `handler` that only aborts with `error`."""
    status = grpc_status(error)

    async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort_with_status(status)

    async def stream_response(
        request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await context.abort_with_status(status)
        yield  # pragma: no cover - abort raises; this makes the function an async generator

    return same_shape(handler, lambda _: unary_response, lambda _: stream_response)
