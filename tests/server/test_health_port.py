"""`maxact serve --health-port`: grpc.health.v1 answered by a separate process that follows the
server's word and its event loop's heartbeat, turns NOT_SERVING when the server drains or
stops beating, and never outlives it. Real `maxact serve` processes and real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from maxact.server import healthcheck
from maxact.server.app import SERVICE_NAMES, start_server
from tests.health_probe import check, health_watch
from tests.onnx_models import bright_square_model, save
from tests.security.conftest import make_certificate
from tests.serve_process import serve_process

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STALE_SECONDS = 3.0  # --health-stale-seconds of the stop/continue test


def wait_for(condition: Callable[[], bool], seconds: float) -> float:
    """Poll `condition` every 0.1 s; the seconds it took to hold (fails after `seconds`)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - start


def health_process_of(pid: int) -> int:
    """The pid of the health process `maxact serve` (pid) started."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"health_process" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    raise AssertionError(f"process {pid} has no health process")


def is_dead(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it: it runs no more."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@dataclass
class Served:
    """A `maxact serve --health-port 0` process and where it answers."""

    process: subprocess.Popen[str]
    address: str  # the main port
    health: str  # the health process's port, read from the start-up line

    @property
    def health_pid(self) -> int:
        return health_process_of(self.process.pid)


@contextmanager
def health_served(tmp_path: Path, *flags: str) -> Iterator[Served]:
    """`maxact serve --health-port 0 FLAGS` over one model."""
    save(bright_square_model(64), tmp_path / "models", "net")
    ready: list[str] = []
    served = ["--model-root", str(tmp_path / "models"), "--store", str(tmp_path / "s.sqlite")]
    with serve_process(*served, "--no-http", "--health-port", "0", *flags, ready=ready) as (
        process,
        address,
    ):
        found = re.search(r"health on 127\.0\.0\.1:(\d+)", ready[0])
        assert found, ready[0]
        yield Served(process, address, f"127.0.0.1:{found.group(1)}")


@pytest.mark.slow
def test_the_health_port_answers_serving_for_the_server_and_every_service(
    tmp_path: Path,
) -> None:
    with health_served(tmp_path) as served:
        address, health = served.address, served.health
        assert check(health) == SERVING
        assert [check(health, name) for name in SERVICE_NAMES] == [SERVING] * len(SERVICE_NAMES)
        with pytest.raises(grpc.RpcError) as unknown:
            check(health, "no.such.Service")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert check(address) == SERVING  # the main port's health stays as it was
        probe = subprocess.run(  # the container's probe finds it from MAXACT_HEALTH_PORT alone
            [sys.executable, "-m", "maxact.server.healthcheck", "--timeout", "5"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MAXACT_HEALTH_PORT": health.rsplit(":")[1], "MAXACT_PORT": "1"},
        )
        assert probe.returncode == 0, probe.stderr


@pytest.mark.slow
def test_the_health_port_turns_not_serving_when_sigterm_starts_the_drain(
    tmp_path: Path,
) -> None:
    with health_served(tmp_path) as served:
        child = served.health_pid
        with health_watch(served.health) as statuses:
            served.process.send_signal(signal.SIGTERM)
            assert served.process.wait(60) == 0
        wait_for(lambda: is_dead(child), 10)
    assert statuses[0] == SERVING
    assert statuses[-1] == NOT_SERVING, statuses


@pytest.mark.slow
def test_a_stopped_server_turns_not_serving_after_the_threshold_and_serving_when_continued(
    tmp_path: Path,
) -> None:
    with health_served(tmp_path, "--health-stale-seconds", str(STALE_SECONDS)) as served:
        process, health = served.process, served.health
        wait_for(lambda: check(health) == SERVING, 10)
        os.kill(process.pid, signal.SIGSTOP)
        try:
            # the health process itself answers all along: no Check times out
            took = wait_for(lambda: check(health) == NOT_SERVING, STALE_SECONDS + 10)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        # not at the first missed beat (every 0.5 s): the threshold, less the age of the last
        # beat at the stop (0.5 s idle, more on a loaded machine)
        assert took >= STALE_SECONDS / 2, took
        wait_for(lambda: check(health) == SERVING, 10)


@pytest.mark.slow
def test_the_health_process_does_not_outlive_a_server_killed_with_sigkill(
    tmp_path: Path,
) -> None:
    with health_served(tmp_path) as served:
        child = served.health_pid
        assert check(served.health) == SERVING
        served.process.kill()
        served.process.wait()
        wait_for(lambda: is_dead(child), 10)
        with pytest.raises(grpc.RpcError):
            check(served.health, timeout=2)


def test_an_in_process_server_serves_tls_health_on_its_health_port_and_stops_it(
    tmp_path: Path,
) -> None:
    cert, key = make_certificate(tmp_path / "tls")
    save(bright_square_model(64), tmp_path / "models", "net")
    tls = (cert.read_bytes(), key.read_bytes())
    server = start_server(tmp_path / "models", device="cpu", http=False, tls=tls, health_port=0)
    with server:
        assert server.health_port is not None
        child = health_process_of(os.getpid())
        assert healthcheck.check(f"localhost:{server.health_port}", 5, cert)  # same certificate
        with pytest.raises(grpc.RpcError):  # TLS only
            check(f"127.0.0.1:{server.health_port}", timeout=2)
    wait_for(lambda: is_dead(child), 10)
