"""The JSON API under /api/v1/: one module per resource adds its routes to one router, all
behind the token (one router, so each route's template is its full path: the metrics' label)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from maxact.server.http.api import analysis, catalogue, neurons, responses, scans
from maxact.server.http.auth import require_token
from maxact.server.http.context import HttpContext

API_PREFIX = "/api/v1"


def api_router(context: HttpContext) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_token(context.auth_token))])
    for module in (catalogue, scans, neurons, analysis, responses):
        module.add_routes(router, context)
    return router
