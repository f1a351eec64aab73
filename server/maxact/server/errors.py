"""The server's own errors: a neutral code, an UPPER_SNAKE reason and a bounded message.

No transport here: `service/` maps a ServiceError to a gRPC status (google.rpc.Status with an
ErrorInfo) in one place, so the operations can serve any other face (HTTP/JSON) unchanged.
"""

from __future__ import annotations

import enum

ERROR_DOMAIN = "maxact"
# What an error echoes of a client-supplied value, and of its whole message: a long name
# echoed whole would overflow the client's metadata limit (grpc-status-details-bin travels in
# the trailers) and hide the real error behind RESOURCE_EXHAUSTED.
MAX_SHOWN_CHARS = 200
MAX_MESSAGE_CHARS = 600


class Code(enum.IntEnum):
    """What kind of failure, numbered as google.rpc.Code (so also as gRPC's status codes and
    the numbers stored with a failed scan); only the kinds the server raises."""

    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def shown(value: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`repr(value)`, cut to `limit` characters of the value with how long it really was."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class ServiceError(Exception):
    """A failure the client caused or can act on: a Code, an UPPER_SNAKE reason, a message
    and a few metadata strings, each bounded."""

    def __init__(
        self,
        code: Code,
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


def invalid_argument(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(Code.INVALID_ARGUMENT, reason, message, metadata)


def not_found(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(Code.NOT_FOUND, reason, message, metadata)


def already_exists(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(Code.ALREADY_EXISTS, reason, message, metadata)


def failed_precondition(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(Code.FAILED_PRECONDITION, reason, message, metadata)
