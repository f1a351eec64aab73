"""The login page: with `--auth-token-file` the UI asks for the token once and keeps it in an
HttpOnly cookie that the HTTP face accepts like a bearer token."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from maxact.server.http.ui.guard import COOKIE, safe_next
from maxact.server.http.ui.render import page
from maxact.server.http.ui.services import UiServices

COOKIE_MAX_AGE_S = 30 * 24 * 3600


def login_routes(router: APIRouter, ui: UiServices) -> None:
    @router.get("/login", include_in_schema=False)
    async def login_form(request: Request, next: str = "/") -> Response:
        return page("login.html", next=safe_next(next), wrong=False)

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        token, target = str(form.get("token", "")), safe_next(str(form.get("next", "/")))
        if ui.token is not None and not hmac.compare_digest(token.encode(), ui.token.encode()):
            return page("login.html", status=401, next=target, wrong=True)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_MAX_AGE_S,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response
