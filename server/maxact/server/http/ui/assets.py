"""The UI's stylesheets and scripts, served from package data (htmx and its SSE extension are
vendored there: the UI needs nothing from the network). Only the files named here are served,
so no path a client sends reaches the file system."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from maxact.server.errors import not_found

# name under /ui/static/ -> (package holding static/NAME, media type)
FILES = {
    "report.css": ("maxact.common", "text/css"),  # the report gallery's stylesheet, shared
    "ui.css": ("maxact.server.http.ui", "text/css"),
    "ui.js": ("maxact.server.http.ui", "text/javascript"),
    "htmx.min.js": ("maxact.server.http.ui", "text/javascript"),
    "htmx-ext-sse.min.js": ("maxact.server.http.ui", "text/javascript"),
}
PREFIX = "/ui/static/"
MAX_AGE_S = 3600


@cache
def _read(name: str) -> bytes:
    package, _ = FILES[name]
    return (resources.files(package) / "static" / name).read_bytes()


def static_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(PREFIX + "{name}")
    def static_file(name: str) -> Response:
        if name not in FILES:
            raise not_found("STATIC_FILE_NOT_FOUND", f"no UI file {name[:200]!r}")
        return Response(
            _read(name),
            media_type=FILES[name][1],
            headers={"Cache-Control": f"public, max-age={MAX_AGE_S}"},
        )

    return router
