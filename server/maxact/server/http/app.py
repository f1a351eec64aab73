"""The HTTP application: the JSON API under /api/v1/ and the web UI at /, over the same core,
token and limits as the gRPC face."""

from __future__ import annotations

from fastapi import FastAPI

from maxact.common.version import maxact_version
from maxact.server.http.api import api_router
from maxact.server.http.context import HttpContext
from maxact.server.http.errors import install_error_handlers
from maxact.server.http.middleware import install_middleware
from maxact.server.http.ui import ui_router

API_DESCRIPTION = (
    "The JSON face of a maxact server: the documents are those of `maxact ... --json`. "
    "Layer names travel as the `layer` query parameter. Errors answer "
    '`{"error": {"code", "status", "reason", "message"}}`.'
)


def create_http_app(context: HttpContext) -> FastAPI:
    """The FastAPI app of one server (no interactive docs page: it would load scripts from a
    CDN; `/openapi.json` describes every route)."""
    app = FastAPI(
        title="maxact",
        version=maxact_version(),
        description=API_DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_middleware(app, context)
    app.include_router(api_router(context))
    app.include_router(ui_router(context), include_in_schema=False)  # pages, not the API
    return app
