"""Errors that carry their gRPC status code and an UPPER_SNAKE reason (google.rpc.ErrorInfo)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "maxact"
# What an error echoes of a client-supplied value, and of its whole message: a long name
# echoed whole would overflow the client's metadata limit (grpc-status-details-bin travels in
# the trailers) and hide the real error behind RESOURCE_EXHAUSTED.
MAX_SHOWN_CHARS = 200
MAX_MESSAGE_CHARS = 600


def shown(value: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`repr(value)`, cut to `limit` characters of the value with how long it really was."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class ServiceError(Exception):
    """A failure the client caused or can act on; becomes a google.rpc.Status with ErrorInfo."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        message = clipped(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = {
            clipped(key, MAX_SHOWN_CHARS): clipped(str(value), MAX_SHOWN_CHARS)
            for key, value in (metadata or {}).items()
        }

    def to_status(self) -> status_pb2.Status:
        """The rich status: code, message and one ErrorInfo detail."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=[detail])


def invalid_argument(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, metadata)


def not_found(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, reason, message, metadata)


def already_exists(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, reason, message, metadata)


def failed_precondition(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, reason, message, metadata)
