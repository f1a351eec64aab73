"""The one place the server's own errors become HTTP answers: the HTTP status of each code
(as Google's AIP-193 and grpc-gateway map them) and the JSON error document
`{"error": {"code", "status", "reason", "message"}}`."""

from __future__ import annotations

from typing import Any

from maxact.server.errors import Code, ServiceError

HTTP_STATUS: dict[Code, int] = {
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


def http_status(code: Code) -> int:
    return HTTP_STATUS.get(code, 500)


def error_document(error: ServiceError, status: int | None = None) -> dict[str, Any]:
    """The JSON body of an error answer; `status` where HTTP has a more precise one than the
    code's (413 for a body over the bound, 415 for a body that is not JSON)."""
    return {
        "error": {
            "code": status or http_status(error.code),
            "status": error.code.name,
            "reason": error.reason,
            "message": error.message,
        }
    }
