"""The web UI's pages (a stub until the UI lands): one router the HTTP app includes."""

from __future__ import annotations

from fastapi import APIRouter

from maxact.server.http.context import HttpContext


def ui_router(context: HttpContext) -> APIRouter:
    """The UI's routes at `/`; none yet."""
    del context
    return APIRouter()
