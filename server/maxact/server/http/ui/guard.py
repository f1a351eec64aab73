"""Every UI page goes through `guarded`: with a token configured, a browser without the token
cookie is sent to the login page (asked once; the cookie then carries it), and the server's
errors become an HTML page with the HTTP status of their code instead of a stack trace."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import ParamSpec
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from maxact.server.errors import Code, ServiceError
from maxact.server.http.ui.render import page

COOKIE = "maxact_token"
P = ParamSpec("P")
# google.rpc codes as HTTP statuses (AIP-193), for the UI's error pages
HTTP_STATUS = {
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
TITLES = {400: "That cannot be answered", 404: "Not found", 429: "Too much at once"}


def presented_token(request: Request) -> str:
    """The token a request carries: `Authorization: Bearer` or the login cookie."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.cookies.get(COOKIE, "")


def token_ok(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    return hmac.compare_digest(presented_token(request).encode(), token.encode())


def safe_next(target: str) -> str:
    """Where to go after the login: a path on this site only (no '//host', no scheme)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/login?" + urlencode({"next": safe_next(target)})
    if request.headers.get("hx-request"):  # an htmx fragment: let the page navigate
        return Response(status_code=401, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def error_page(error: ServiceError) -> HTMLResponse:
    status = HTTP_STATUS.get(error.code, 500)
    return page(
        "error.html",
        status=status,
        status_text=str(status),
        title=TITLES.get(status, "Something went wrong"),
        reason=error.reason,
        message=error.message,
    )


def guarded(
    token: str | None,
) -> Callable[[Callable[P, Awaitable[Response]]], Callable[P, Awaitable[Response]]]:
    """Decorate a page handler whose first parameter is the Request."""

    def decorate(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
        @functools.wraps(handler)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            request = kwargs.get("request")
            assert isinstance(request, Request)
            if not token_ok(request, token):
                return login_redirect(request)
            try:
                return await handler(*args, **kwargs)
            except ServiceError as error:
                return error_page(error)

        return wrapper

    return decorate
