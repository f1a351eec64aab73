"""Optional OpenTelemetry tracing (`maxact serve --otel-endpoint URL`, the `otel` extra): a
span per gRPC call and per HTTP request, sent to an OTLP/HTTP collector. Off by default; the
packages are imported only when it is on, so the server runs without them."""

from __future__ import annotations

from typing import Any

SERVICE_NAME = "maxact"


class TracingUnavailable(RuntimeError):
    """--otel-endpoint was given but the `otel` extra is not installed."""


def tracer_provider(endpoint: str) -> Any:
    """A TracerProvider batching spans to the collector at `endpoint` (its base URL, e.g.
    http://127.0.0.1:4318; spans go to /v1/traces)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingUnavailable(
            "--otel-endpoint needs the 'otel' extra: pip install 'maxact[server,otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def grpc_interceptor(provider: Any) -> Any:
    """The grpc.aio server interceptor that opens a span per call."""
    from opentelemetry.instrumentation import grpc as otel_grpc

    make: Any = otel_grpc.aio_server_interceptor  # not annotated by its package
    return make(tracer_provider=provider)


def instrument_http(app: Any, provider: Any) -> None:
    """A span per HTTP request of the FastAPI app."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
