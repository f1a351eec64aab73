"""The web UI at `/`: server-rendered jinja2 pages with htmx (vendored) and Server-Sent Events
for live progress, every view at a permanent URL. The pages call the transport-neutral core
directly, not the JSON API."""

from __future__ import annotations

from fastapi import APIRouter

from maxact.server.http.context import HttpContext
from maxact.server.http.ui.analysis_pages import analysis_routes
from maxact.server.http.ui.assets import static_router
from maxact.server.http.ui.home_pages import home_routes
from maxact.server.http.ui.login_page import login_routes
from maxact.server.http.ui.responses_parts import responses_routes
from maxact.server.http.ui.scan_pages import scan_routes
from maxact.server.http.ui.services import UiServices
from maxact.server.http.ui.try_page import try_routes


def ui_router(context: HttpContext) -> APIRouter:
    ui = UiServices.of(context)
    router = APIRouter(include_in_schema=False)
    router.include_router(static_router())
    for routes in (
        login_routes,
        home_routes,
        scan_routes,
        responses_routes,
        analysis_routes,
        try_routes,
    ):
        routes(router, ui)
    return router
