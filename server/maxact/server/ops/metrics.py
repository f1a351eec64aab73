"""Prometheus metrics with prometheus_client: the standard gRPC server metrics (the names of
go-grpc-prometheus / py-grpc-prometheus, so existing dashboards work), maxact's scan metrics,
and the process/platform/GC collectors that prometheus_client registers by default.

All live in prometheus_client's process-wide default registry; `/metrics` is served on
`--metrics-port` by prometheus_client's own HTTP server thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from maxact.server.ops.memory import BUDGET

# Standard gRPC server metrics (grpc_type: unary, client_stream, server_stream, bidi_stream).
GRPC_STARTED = Counter(
    "grpc_server_started",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
GRPC_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, regardless of success or failure.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# The HTTP face's requests, by route template (never the raw path: names are unbounded).
HTTP_REQUESTS = Counter(
    "http_server_requests",
    "HTTP requests completed on the server, regardless of status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "http_server_request_duration_seconds",
    "Time from the start of an HTTP request to the end of its answer.",
    ["method", "route"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# maxact's own.
IMAGES_SCANNED = Counter("maxact_images_scanned", "Images reduced by any scan.")
IMAGES_SKIPPED = Counter("maxact_images_skipped", "Unreadable images skipped.")
SCAN_IMAGES_PER_SECOND = Gauge("maxact_scan_images_per_second", "Throughput of the last scan.")
SCANS_QUEUED = Gauge("maxact_scans_queued", "Persisted scans waiting for a slot.")
SCANS_RUNNING = Gauge("maxact_scans_running", "Persisted scans running now.")
INPUT_CACHE_HITS = Counter(
    "maxact_input_cache_hits", "Model inputs read from the decoded-input cache, not decoded."
)
INPUT_CACHE_MISSES = Counter(
    "maxact_input_cache_misses", "Model inputs decoded because the input cache had none."
)


class MemoryCollector(Collector):
    """The memory budget and, per cache (sessions, decoded originals, layer outputs,
    rendered patches), the bytes it is charged, its entries and its evictions, read at scrape
    time from the caches themselves (caches of the same name add up)."""

    def collect(self) -> Iterator[Metric]:
        budget = GaugeMetricFamily(
            "maxact_memory_budget_bytes", "The server's memory budget (--memory-budget-mb)."
        )
        budget.add_metric([], BUDGET.total_bytes)
        share = GaugeMetricFamily(
            "maxact_memory_cache_budget_bytes", "The part of the budget the caches share."
        )
        share.add_metric([], BUDGET.cache_bytes)
        sizes = GaugeMetricFamily(
            "maxact_cache_bytes", "Bytes a cache is charged for what it keeps.", labels=["cache"]
        )
        entries = GaugeMetricFamily(
            "maxact_cache_entries", "Entries a cache keeps.", labels=["cache"]
        )
        evictions = CounterMetricFamily(
            "maxact_cache_evictions", "Entries evicted to stay within a bound.", labels=["cache"]
        )
        totals: dict[str, list[int]] = {}
        for cache in BUDGET.caches():
            total = totals.setdefault(cache.name, [0, 0, 0])
            total[0] += cache.bytes
            total[1] += len(cache)
            total[2] += cache.evictions
        for name, (size, count, evicted) in sorted(totals.items()):
            sizes.add_metric([name], size)
            entries.add_metric([name], count)
            evictions.add_metric([name], evicted)
        yield from (budget, share, sizes, entries, evictions, *_working_sets())


def _working_sets() -> Iterator[Metric]:
    """What model runs in flight reserve in the budget: now, at most so far, and how often a
    run waited for room or was refused."""
    gauges = (
        ("work_budget_bytes", "The part of the budget model runs in flight share.", "work_bytes"),
        ("reserved_bytes", "Estimated working sets of the model runs in flight.", "reserved_bytes"),
        ("reserved_peak_bytes", "The most model runs in flight reserved.", "reserved_peak_bytes"),
    )
    for name, text, attribute in gauges:
        yield GaugeMetricFamily(f"maxact_memory_{name}", text, value=getattr(BUDGET, attribute))
    counters = (
        ("admission_waits", "Model runs that waited for room in the budget.", "admission_waits"),
        ("admission_refusals", "Model runs refused for memory.", "admission_refusals"),
    )
    for name, text, attribute in counters:
        yield CounterMetricFamily(f"maxact_memory_{name}", text, value=getattr(BUDGET, attribute))


REGISTRY.register(MemoryCollector())


class MetricsServer:
    """GET /metrics on a background thread; port 0 picks a free port (`.port`)."""

    def __init__(self, host: str, port: int) -> None:
        self._server: Any
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=REGISTRY)
        self.port = int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
