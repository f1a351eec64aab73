"""Open the gRPC channel: plaintext or TLS, with the bearer token attached to every call.

The token goes in through a channel interceptor rather than per-call arguments, so every stub
made on the channel (including ones added later, or made by users on `client.channel`) sends
it; gRPC's call credentials would refuse a plaintext channel, and a token over loopback
plaintext is a legitimate setup.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Any

import grpc

TOKEN_ENV = "MAXACT_TOKEN"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # patches of large photos exceed gRPC's 4 MiB default

# Calls gRPC itself retries when the server is briefly UNAVAILABLE (restarting, a dropped
# connection): only calls that are safe to repeat. CreateScan is among them because the
# client sends a request_id with it: a retry of a call whose response was lost returns the
# scan the first attempt created instead of starting a second one. Left out: DeleteScan (a
# retry after a lost response would report NOT_FOUND for a delete that worked), UploadModel
# and StreamTopKImages (client streams of large messages gRPC would have to buffer).
# `waitForReady` stays off: with it a CLI call to a server that is down would hang until its
# deadline instead of failing at once with "cannot reach the maxact server".
_RETRIED_METHODS = {
    "maxact.v1.ModelService": ("ListModels", "GetModel", "LoadModel", "UnloadModel"),
    "maxact.v1.DatasetService": ("ListDatasets", "GetDataset"),
    "maxact.v1.ReceptiveFieldService": ("GetReceptiveField",),
    "maxact.v1.TopKService": ("StreamTopK",),
    "maxact.v1.ScanService": ("CreateScan", "GetScan", "ListScans", "WatchScan", "CancelScan"),
    "maxact.v1.NeuronService": ("GetNeuron", "GetLayerStatistics"),
}
SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [
                {"service": service, "method": method}
                for service, methods in _RETRIED_METHODS.items()
                for method in methods
            ],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """ClientCallDetails with metadata replaced (grpc's own type is abstract)."""


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call's metadata."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def resolve_token(token: str | None) -> str | None:
    """The explicit token, else $MAXACT_TOKEN, else None (surrounding whitespace dropped)."""
    value = token if token is not None else os.environ.get(TOKEN_ENV)
    value = (value or "").strip()
    return value or None


def read_token_file(path: str | Path) -> str:
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def open_channel(
    server: str, *, token: str | None = None, tls_ca: str | Path | bytes | None = None
) -> grpc.Channel:
    """A channel to `server`: TLS verified against `tls_ca` (PEM path or bytes) when given."""
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ]
    if tls_ca is not None:
        ca = tls_ca if isinstance(tls_ca, bytes) else Path(tls_ca).read_bytes()
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        channel = grpc.secure_channel(server, credentials, options=options)
    else:
        channel = grpc.insecure_channel(server, options=options)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel
