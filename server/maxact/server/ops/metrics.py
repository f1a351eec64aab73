"""Prometheus metrics without a dependency: counters, gauges and histograms in the text
exposition format, served over HTTP on `--metrics-port`.

One process-wide registry (`METRICS`); the hot path only takes a lock and adds a number.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for key, value in labels
    )
    return "{" + inner + "}"


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Histogram: per-bucket counts, then sum and count at the end."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            cells = self._histograms[name].setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))
            cells[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
            cells[-1] += value

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in sorted(self._help.items()):
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind == "histogram":
                    for labels, cells in sorted(self._histograms[name].items()):
                        cumulative = 0.0
                        for bound, count in zip(LATENCY_BUCKETS, cells, strict=False):
                            cumulative += count
                            le = (*labels, ("le", repr(float(bound))))
                            lines.append(f"{name}_bucket{_labels(le)} {cumulative:g}")
                        cumulative += cells[len(LATENCY_BUCKETS)]
                        lines.append(
                            f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {cumulative:g}"
                        )
                        lines.append(f"{name}_sum{_labels(labels)} {cells[-1]:g}")
                        lines.append(f"{name}_count{_labels(labels)} {cumulative:g}")
                else:
                    for labels, value in sorted(self._values[name].items()):
                        lines.append(f"{name}{_labels(labels)} {value:g}")
        return "\n".join(lines) + "\n"


METRICS = Registry()
METRICS.describe("maxact_rpc_requests_total", "counter", "RPCs handled, by method and code.")
METRICS.describe("maxact_rpc_duration_seconds", "histogram", "RPC latency, by method.")
METRICS.describe("maxact_images_scanned_total", "counter", "Images reduced by any scan.")
METRICS.describe("maxact_images_skipped_total", "counter", "Unreadable images skipped.")
METRICS.describe("maxact_scan_images_per_second", "gauge", "Throughput of the last scan.")
METRICS.describe("maxact_scans_queued", "gauge", "Persisted scans waiting for a slot.")
METRICS.describe("maxact_scans_running", "gauge", "Persisted scans running now.")


class MetricsServer:
    """GET /metrics on a background thread; port 0 picks a free port (`.port`)."""

    def __init__(self, host: str, port: int, registry: Registry = METRICS) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = registry.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes are not worth a log line
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="maxact-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
