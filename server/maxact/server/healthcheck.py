"""`python -m maxact.server.healthcheck`: exit 0 when the local server answers SERVING on
grpc.health.v1, else 1. The container image's HEALTHCHECK runs it (no extra binary needed).

It reads the same MAXACT_* variables as `maxact serve`: MAXACT_HEALTH_PORT when set (the health
process, which answers even while the server is busy), else MAXACT_PORT (default 50051), and,
when the server serves TLS, MAXACT_TLS_CERT, whose certificate it then trusts for "localhost".
Health needs no bearer token.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maxact.server.settings import ProbeSettings


def check(address: str, timeout_s: float, tls_cert: Path | None = None) -> bool:
    """True when the server at `address` reports SERVING for the whole server ("")."""
    if tls_cert is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_cert.read_bytes())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            # types-grpcio-health-checking declares HealthStub without its methods
            response = stub.Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maxact.server.healthcheck")
    served = ProbeSettings()
    tls_cert = served.tls_cert
    host = "localhost" if tls_cert else "127.0.0.1"
    # a health port of 0 was picked at start: only the server's log knows it
    port = served.health_port or served.port
    parser.add_argument("--address", default=f"{host}:{port}")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    try:
        healthy = check(args.address, args.timeout, tls_cert)
    except OSError as exc:  # the certificate to trust cannot be read: one line, no traceback
        print(f"MAXACT_TLS_CERT {tls_cert}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print("SERVING" if healthy else f"not serving at {args.address}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
