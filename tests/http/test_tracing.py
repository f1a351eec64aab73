"""`--otel-endpoint`: a span per gRPC call and per HTTP request reaches an OTLP/HTTP collector
(a real HTTP server on loopback that decodes what it receives); without it nothing is sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from maxact.client import Client
from maxact.server.app import start_server

trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2", reason="the 'otel' extra"
)


class _Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[str] = []


class _Receive(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        request = trace_service.ExportTraceServiceRequest.FromString(body)
        assert isinstance(self.server, _Collector)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.server.spans.extend(span.name for span in scope.spans)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[_Collector]:
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_spans_of_grpc_calls_and_http_requests_reach_the_collector(
    world: tuple[Path, Path], tmp_path: Path, collector: _Collector
) -> None:
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    with start_server(
        *world, device="cpu", store=tmp_path / "s.sqlite", otel_endpoint=endpoint
    ) as server:
        with Client(server.address, timeout=30) as client:
            client.list_models()
        assert httpx.get(f"{server.http_url}/api/v1/models", timeout=30).status_code == 200
    # stopping the server flushed the batched spans
    assert any("ModelService/ListModels" in name for name in collector.spans), collector.spans
    assert any("/api/v1/models" in name for name in collector.spans), collector.spans


def test_without_an_endpoint_nothing_is_traced(
    world: tuple[Path, Path], tmp_path: Path, collector: _Collector
) -> None:
    with start_server(*world, device="cpu", store=tmp_path / "s.sqlite") as server:
        assert server._built.tracing is None
        assert httpx.get(f"{server.http_url}/api/v1/models", timeout=30).status_code == 200
    assert collector.spans == []
