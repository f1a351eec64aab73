"""grpc.health.v1 as a probe sees it, for the tests of the main port's health and of the
--health-port process: one Check, and a Watch collecting every status until the stream ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 5.0) -> int:
    """One plaintext Check; the status."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return int(stub.Check(request, timeout=timeout).status)


@contextmanager
def health_watch(address: str, timeout: float = 60.0) -> Iterator[list[int]]:
    """Watch the whole server's health in a thread; yields the list of every status sent
    until the stream ends (the server went away or `timeout` passed), which leaving the block
    waits for."""
    statuses: list[int] = []
    first = threading.Event()

    def watch() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            try:
                for answer in stub.Watch(request, timeout=timeout):
                    statuses.append(answer.status)
                    first.set()
            except grpc.RpcError:
                pass  # the server (or the health process) went away

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert first.wait(10), "no health status within 10 s"
    yield statuses
    watcher.join(timeout)
