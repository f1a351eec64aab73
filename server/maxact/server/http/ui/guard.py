"""Every UI page goes through `guarded`: with a token configured, a browser without the token
cookie is sent to the login page (asked once; the cookie then carries it), and the server's
errors become an HTML page with the HTTP status of their code instead of a stack trace."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from maxact.server.errors import ServiceError
from maxact.server.http.auth import TOKEN_COOKIE, token_error
from maxact.server.http.status import http_status
from maxact.server.http.ui.render import page

COOKIE = TOKEN_COOKIE
P = ParamSpec("P")
TITLES = {400: "That cannot be answered", 404: "Not found", 429: "Too much at once"}


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
    status = http_status(error.code)
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
            if token_error(request, token) is not None:
                return login_redirect(request)
            try:
                return await handler(*args, **kwargs)
            except ServiceError as error:
                return error_page(error)

        return wrapper

    return decorate
