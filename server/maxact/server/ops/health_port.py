"""The server's health as one thing to set: grpc.health.v1 on the main port (clients rely on
it) and, with --health-port, the health process (ops/health_process.py), which answers
probes from its own interpreter and must hear a heartbeat from this event loop to stay
SERVING."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from grpc_health.v1 import health, health_pb2

from maxact.server.ops.health_process import HEARTBEAT_SECONDS, StartSettings

log = logging.getLogger("maxact.server.health")

START_SECONDS = 60.0  # importing grpc on a loaded machine can take seconds
STATUS_NAME = health_pb2.HealthCheckResponse.ServingStatus.Name


class HealthPortError(Exception):
    """The health process could not listen; the message says where."""


def _read_line(fd: int, timeout: float) -> bytes:
    """One line from a pipe within `timeout` seconds (b"" at end of file or timeout)."""
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""
        byte = os.read(fd, 1)
        if not byte:
            return b""
        line += byte
    return line


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte to a blocking pipe (os.write may take only part)."""
    while data:
        data = data[os.write(fd, data) :]


class HealthProcess:
    """The health process seen from the server: started, told the statuses, stopped."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self._process = process
        self.port = port
        assert process.stdin is not None
        self._pipe = process.stdin.fileno()
        os.set_blocking(self._pipe, False)  # telling must never block the event loop
        self._lost = False

    @classmethod
    def start(cls, settings: StartSettings) -> HealthProcess:
        """Start it and wait until it listens. Call it from the thread that lives as long as
        the server (its event loop's): Linux's parent-death signal follows the forking
        thread."""
        process = subprocess.Popen(
            [sys.executable, "-m", "maxact.server.ops.health_process", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert process.stdin is not None and process.stdout is not None
        _write_all(process.stdin.fileno(), json.dumps(asdict(settings)).encode() + b"\n")
        answer = _read_line(process.stdout.fileno(), START_SECONDS).decode().strip()
        process.stdout.close()
        if not answer.startswith("port "):
            process.kill()
            process.wait()
            if answer.startswith("error "):  # it could not bind
                raise HealthPortError(
                    f"{answer.removeprefix('error ')}: the port is in use or the host is not an "
                    f"address of this machine (pick another --health-port, or 0 for a free one)"
                )
            raise HealthPortError(
                f"the health process exited or hung before listening (exit code "
                f"{process.returncode}; its own error, if any, is above)"
            )
        return cls(process, int(answer.removeprefix("port ")))

    @property
    def pid(self) -> int:
        return self._process.pid

    def tell(self, statuses: dict[str, int]) -> None:
        """Send every status: also the heartbeat. Never blocks: a full pipe (the process is
        not reading) drops this line, the next beat carries the same news."""
        line = json.dumps({"statuses": {k: STATUS_NAME(v) for k, v in statuses.items()}})
        try:
            os.write(self._pipe, line.encode() + b"\n")  # < PIPE_BUF: written whole or not
        except BlockingIOError:
            pass
        except OSError as exc:
            if not self._lost:
                self._lost = True
                log.error("the health process is gone (%s): --health-port answers nothing", exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Close its pipe (it ends at end of file); kill it if it does not."""
        with contextlib.suppress(OSError):
            os.close(self._pipe)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class ServerHealth:
    """Every service's status, set in one place: the health process first (a probe there
    must see a drain at once), then the main port's servicer. With a health process it also
    beats from the event loop: a loop that stops beating is a wedged server."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        services: Sequence[str],
        process: HealthProcess | None = None,
    ) -> None:
        self.servicer = servicer
        self.process = process
        self._statuses: dict[str, int] = {
            name: health_pb2.HealthCheckResponse.NOT_SERVING for name in services
        }
        self._beat: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        """The health process's port (None without one)."""
        return self.process.port if self.process is not None else None

    async def set_all(self, status: int) -> None:
        """Every service (and the server, "") to `status`."""
        self._statuses = {name: status for name in self._statuses}
        if self.process is not None:
            self.process.tell(self._statuses)
        for name in self._statuses:
            await self.servicer.set(name, status)

    def start_heartbeat(self) -> None:
        """Beat from this event loop every HEARTBEAT_SECONDS until close()."""
        if self.process is not None and self._beat is None:
            self._beat = asyncio.create_task(self._beating(self.process))

    async def _beating(self, process: HealthProcess) -> None:
        while True:
            process.tell(self._statuses)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def close(self) -> None:
        """Stop beating and stop the health process."""
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if self.process is not None:
            await asyncio.to_thread(self.process.stop)
