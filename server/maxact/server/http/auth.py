"""The bearer token on the HTTP face: `Authorization: Bearer TOKEN`, or the `maxact_token`
cookie the web UI's login form sets (a browser cannot add headers to an <img> request).
Compared in constant time, like the gRPC interceptor does."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request

from maxact.server.errors import Code, ServiceError

TOKEN_COOKIE = "maxact_token"
_BEARER = "bearer "


def presented_token(request: Request) -> str | None:
    """The token the request carries: the Authorization header first, else the cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        return header[len(_BEARER) :] if header.lower().startswith(_BEARER) else ""
    return request.cookies.get(TOKEN_COOKIE)


def token_error(request: Request, expected: str | None) -> ServiceError | None:
    """None when the request may pass (no token configured, or the right one), else the
    UNAUTHENTICATED error to answer with."""
    if expected is None:
        return None
    given = presented_token(request)
    if given is None:
        return ServiceError(
            Code.UNAUTHENTICATED,
            "TOKEN_MISSING",
            "this server requires a token: send 'Authorization: Bearer <token>' "
            f"(or the {TOKEN_COOKIE} cookie)",
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return ServiceError(Code.UNAUTHENTICATED, "TOKEN_INVALID", "the bearer token is not valid")
    return None


def require_token(expected: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency refusing requests without the token (401 with the JSON error)."""

    def dependency(request: Request) -> None:
        error = token_error(request, expected)
        if error is not None:
            raise error

    return dependency
