"""One exception type for every failed call, so callers never handle raw grpc.RpcError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class MaxactError(Exception):
    """A failed maxact call: the gRPC status code, the ErrorInfo reason and the server's message."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(code, reason, message)
        self.code = code
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        if self.reason:
            return f"{self.code.name} ({self.reason}): {self.message}"
        return f"{self.code.name}: {self.message}"


def _info_reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def from_status(status: status_pb2.Status) -> MaxactError:
    """A google.rpc.Status carried in a message (a failed scan's error) as the error type a
    failed call raises."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    return MaxactError(code, _info_reason(status), status.message)


def _reason_of(error: grpc.RpcError) -> str:
    """The ErrorInfo reason carried in the rich google.rpc.Status, or "" when there is none."""
    if not isinstance(error, grpc.Call):  # every RpcError grpc raises is also its Call
        return ""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # a status whose details disagree with the call's code
        return ""
    if status is None:
        return ""
    return _info_reason(status)


def from_rpc_error(error: grpc.RpcError, server: str = "") -> MaxactError:
    """Convert a grpc.RpcError, naming the server when it could not be reached at all."""
    # Duck-typed: the errors grpc raises are also grpc.Call objects with code() and details().
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else str(error)) or ""
    reason = _reason_of(error)
    if code == grpc.StatusCode.UNAVAILABLE and server and not reason:
        message = f"cannot reach the maxact server at {server}: {message}"
    return MaxactError(code, reason, message)


@contextmanager
def rpc_errors(server: str = "") -> Iterator[None]:
    """A grpc.RpcError raised inside (starting or reading a call) leaves as a MaxactError."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error, server) from None
