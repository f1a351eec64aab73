"""The one place the server's own errors become gRPC statuses (google.rpc.Status with an
ErrorInfo detail): the servicers' `rpc` decorator and the interceptors (auth, admission, the
decode guard) all answer through it. It lives in ops/, under service/, because the scan
engine imports ops (metrics) and service/ imports the engine."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from maxact.server.errors import ERROR_DOMAIN, ServiceError


def status_proto(
    code: int, reason: str, message: str, metadata: dict[str, str] | None = None
) -> status_pb2.Status:
    """The rich status: code (google.rpc numbering), message and one ErrorInfo detail."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code, message=message, details=[detail])


def grpc_status(error: ServiceError) -> grpc.Status:
    """A ServiceError as the status a handler or an interceptor aborts with."""
    return rpc_status.to_status(
        status_proto(error.code, error.reason, error.message, error.metadata)
    )
