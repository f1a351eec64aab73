"""What every HTTP request needs watched, as one pure ASGI middleware (it must not buffer
event streams): a request id (the client's X-Request-Id or a fresh one, echoed back and set
in the log context), the admission slots shared with gRPC, a bound on the body, the request
metrics and one log line per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maxact.server.errors import Code, ServiceError
from maxact.server.http.context import HttpContext
from maxact.server.http.status import error_document, http_status
from maxact.server.ops.logs import REQUEST_ID
from maxact.server.ops.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS
from maxact.server.ops.slots import Slots

log = logging.getLogger("maxact.server.http")
REQUEST_ID_HEADER = "x-request-id"
# a client's request id is kept (logged, echoed) only when it is this tame
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# What admission counts: the API; the UI's pages and the schema are cheap.
ADMITTED_PREFIXES = ("/api/",)
# The API takes small JSON bodies only; elsewhere (the UI's image upload) the image bound holds.
MAX_API_BODY_BYTES = 1024 * 1024


class BodyTooLarge(Exception):
    """The body grew past the bound while it was read."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _answer_error(
    send: Send, error: ServiceError, request_id: str, status: int | None = None
) -> int:
    status = status or http_status(error.code)
    body = json.dumps(error_document(error, status)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (REQUEST_ID_HEADER.encode(), request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


def _not_json(content_type: str) -> ServiceError:
    return ServiceError(
        Code.INVALID_ARGUMENT,
        "UNSUPPORTED_MEDIA_TYPE",
        f"the API takes JSON bodies (Content-Type: application/json), not {content_type[:100]!r}",
    )


def _sends_a_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return (length is not None and length != "0") or _header(
        scope, b"transfer-encoding"
    ) is not None


def _too_large(limit: int) -> ServiceError:
    return ServiceError(
        Code.RESOURCE_EXHAUSTED,
        "BODY_TOO_LARGE",
        f"the request body is larger than {limit} bytes",
        {"limit": str(limit)},
    )


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it grows past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out `body` once, then waits on the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class ObservingMiddleware:
    def __init__(self, app: ASGIApp, slots: Slots, max_upload_bytes: int) -> None:
        self.app = app
        self.slots = slots
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER.encode()) or ""
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        token = REQUEST_ID.set(request_id)
        start, status = time.perf_counter(), 500
        try:
            status = await self._admitted(scope, receive, send, request_id)
        finally:
            self._record(scope, status, time.perf_counter() - start, request_id)
            try:
                REQUEST_ID.reset(token)
            except ValueError:
                REQUEST_ID.set("")

    async def _admitted(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        """Run the app within a slot (for the counted paths) and the body bound; the status
        answered."""
        counted = str(scope.get("path", "")).startswith(ADMITTED_PREFIXES)
        limit = MAX_API_BODY_BYTES if counted else self.max_upload_bytes
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _answer_error(send, _too_large(limit), request_id, 413)
        content_type = _header(scope, b"content-type") or ""
        if counted and _sends_a_body(scope) and not content_type.startswith("application/json"):
            return await _answer_error(send, _not_json(content_type), request_id, 415)
        if counted and length is None and _sends_a_body(scope):
            # a JSON body without Content-Length: read it whole (it is small) within the bound
            body = await _read_body(receive, limit)
            if body is None:
                return await _answer_error(send, _too_large(limit), request_id, 413)
            receive = _replaying(body, receive)
        if counted and not self.slots.try_take():
            return await _answer_error(send, self.slots.refusal(), request_id)
        state: dict[str, Any] = {"status": 500, "started": False, "received": 0}

        async def bounded_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    raise BodyTooLarge
            return message

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, bounded_receive, observed_send)
        except BodyTooLarge:
            if state["started"]:
                raise
            return await _answer_error(send, _too_large(limit), request_id, 413)
        finally:
            if counted:
                self.slots.release()
        return int(state["status"])

    @staticmethod
    def _record(scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route = getattr(scope.get("route"), "path", None) or (
            "/openapi.json" if scope.get("path") == "/openapi.json" else "unmatched"
        )
        method = str(scope.get("method", "?"))
        HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
        HTTP_REQUEST_SECONDS.labels(method=method, route=route).observe(seconds)
        milliseconds = round(seconds * 1000, 2)
        client = scope.get("client")
        fields = {
            "request_id": request_id,
            "method": method,
            "path": str(scope.get("path", ""))[:200],
            "route": route,
            "status": status,
            "ms": milliseconds,
            "peer": f"{client[0]}:{client[1]}" if client else "",
        }
        log.info("%s %s %d %.2f ms", method, fields["path"], status, milliseconds, extra=fields)


def install_middleware(app: Starlette, context: HttpContext) -> None:
    """The observing middleware, outermost: it sees every request, refused ones too."""
    slots = context.admission or Slots(context.settings.max_concurrent_rpcs)
    app.add_middleware(
        ObservingMiddleware,
        slots=slots,
        max_upload_bytes=context.settings.max_image_bytes + MAX_API_BODY_BYTES,
    )
