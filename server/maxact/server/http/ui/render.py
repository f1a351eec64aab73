"""The UI's jinja2 environment (autoescaped: model, layer, image and class names are user
data) and the helpers every page uses to build links and answers."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from maxact.common.formatting import fmt, shape_text

# The scan's Server-Sent Events (GET /api/v1/scans/{id}/events): one `progress` per change,
# then one `done` with the final state; each carries the `scan get --json` document.
SSE_EVENTS = "progress,done"
SSE_FINAL = "done"
# A page may be cached by nobody: it shows live state.
NO_STORE = {"Cache-Control": "no-store"}


def url(path: str, **params: object) -> str:
    """`path` with the non-empty `params` as its query string; layer names travel there
    because they contain '/', ':' and '.'."""
    kept = {name: str(value) for name, value in params.items() if value not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def model_url(name: str) -> str:
    """/models/{model}: a model name may hold '/' (its folder), kept readable."""
    return "/models/" + quote(name, safe="/")


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("maxact.server.http.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["shape"] = shape_text
    env.filters["percent"] = percent
    env.globals["url"] = url
    env.globals["model_url"] = model_url
    env.globals["sse_events"] = SSE_EVENTS
    env.globals["sse_final"] = SSE_FINAL
    return env


ENV = _environment()


def render(template: str, **values: Any) -> str:
    return ENV.get_template(template).render(**values)


def page(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A whole page (or an htmx fragment) that is never cached."""
    return HTMLResponse(render(template, **values), status_code=status, headers=NO_STORE)


def here(request: Request) -> str:
    """The page's own path and query: what a live page asks for again to refresh itself."""
    return str(request.url.path) + "?" + str(request.url.query)
