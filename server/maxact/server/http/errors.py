"""Exception handlers: every failure of the HTTP face answers with the JSON error document
of `status.py` — the core's ServiceErrors, request validation (bad JSON, unknown or
mistyped fields) and the framework's own (unknown route, wrong method)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from maxact.server.errors import MAX_SHOWN_CHARS, Code, ServiceError, clipped
from maxact.server.http.status import error_document, http_status

log = logging.getLogger("maxact.server.http")

# HTTP statuses the framework raises by itself, as (code, reason)
_FRAMEWORK: dict[int, tuple[Code, str]] = {
    400: (Code.INVALID_ARGUMENT, "BAD_REQUEST"),
    404: (Code.NOT_FOUND, "ROUTE_NOT_FOUND"),
    405: (Code.INVALID_ARGUMENT, "METHOD_NOT_ALLOWED"),
    413: (Code.RESOURCE_EXHAUSTED, "BODY_TOO_LARGE"),
    415: (Code.INVALID_ARGUMENT, "UNSUPPORTED_MEDIA_TYPE"),
}


def error_response(error: ServiceError, status: int | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.code == Code.UNAUTHENTICATED else None
    status = status or http_status(error.code)
    return JSONResponse(error_document(error, status), status_code=status, headers=headers)


def _validation_message(errors: list[Any]) -> str:
    """Pydantic's errors as one line naming each field (its location) and what is wrong."""
    parts = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{clipped(where, MAX_SHOWN_CHARS) or 'body'}: {error.get('msg', '')}")
    return "invalid request: " + "; ".join(parts)


def _validation_reason(errors: list[Any]) -> str:
    kinds = {error.get("type") for error in errors}
    if "json_invalid" in kinds:
        return "MALFORMED_JSON"
    if "extra_forbidden" in kinds:
        return "UNKNOWN_FIELD"
    if "missing" in kinds:
        return "FIELD_REQUIRED"
    return "INVALID_FIELD"


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    error = ServiceError(
        Code.INVALID_ARGUMENT, _validation_reason(errors), _validation_message(errors)
    )
    return error_response(error)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code, reason = _FRAMEWORK.get(exc.status_code, (Code.UNKNOWN, "HTTP_ERROR"))
    error = ServiceError(code, reason, str(exc.detail))
    return error_response(error, exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error serving %s %s", request.method, request.url.path)
    error = ServiceError(Code.INTERNAL, "INTERNAL", f"internal error: {type(exc).__name__}")
    return error_response(error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
