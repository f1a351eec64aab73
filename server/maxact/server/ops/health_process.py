"""The health process (`maxact serve --health-port`): grpc.health.v1 on its own port, in its
own interpreter, so a probe's Check never waits for the server's GIL behind busy scan, decode
and inference threads.

It knows the server only through a pipe (its stdin): the server writes one JSON line of start
settings, then, from its event loop every `HEARTBEAT_SECONDS`, one JSON line with every
service's status. A service is SERVING here only while the server says so AND its last line
is fresher than `stale_seconds`: a wedged (or stopped) server turns unhealthy, a busy one,
whose loop still beats now and then, does not. End of file on the pipe (the server exited or
was killed) ends this process; on Linux the kernel also kills it when the server dies
(PR_SET_PDEATHSIG), so it is never left behind.

It answers the server on stdout with one line: `port N` once listening, or `error MESSAGE`.
It imports only grpc: it starts in well under a second and stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

HEARTBEAT_SECONDS = 0.5
# How often the freshness of the last heartbeat is looked at (the lag of turning unhealthy).
CHECK_SECONDS = 0.25
PR_SET_PDEATHSIG = 1  # linux/prctl.h
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class StartSettings:
    """The first line the server writes: where to listen, with which certificate, how long a
    silence may last."""

    host: str
    port: int
    stale_seconds: float
    cert: str | None = None  # PEM certificate chain: serve TLS
    key: str | None = None  # its PEM private key


@dataclass
class ParentState:
    """What the server last said and when (monotonic seconds)."""

    stale_seconds: float
    statuses: dict[str, int] = field(default_factory=lambda: {"": NOT_SERVING})
    heard_at: float = float("-inf")

    def hear(self, line: bytes, now: float) -> None:
        """One heartbeat line: every service's status by name."""
        message = json.loads(line)
        self.statuses = {
            name: health_pb2.HealthCheckResponse.ServingStatus.Value(status)
            for name, status in message["statuses"].items()
        }
        self.heard_at = now

    def answers(self, now: float) -> dict[str, int]:
        """What each service answers now: the server's word while it is fresh, else
        NOT_SERVING for all."""
        if now - self.heard_at > self.stale_seconds:
            return dict.fromkeys(self.statuses, NOT_SERVING)
        return dict(self.statuses)


class LineReader:
    """Whole lines from a file descriptor, read with os.read (a buffered file would keep bytes
    the event loop's reader callback never hears about)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.ended = False
        self._pending = b""
        self._lines: list[bytes] = []

    def _fill(self) -> None:
        """One os.read (blocking unless the descriptor is non-blocking) into whole lines."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.ended = True
            return
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        self._lines += complete

    def read(self) -> list[bytes]:
        """The whole lines that arrived since the last call; `ended` once the writer closed."""
        self._fill()
        lines, self._lines = self._lines, []
        return lines

    def first_line(self) -> bytes:
        """The first line, waiting for it (b"" when the writer closed first)."""
        while not self.ended and not self._lines:
            self._fill()
        return self._lines.pop(0) if self._lines else b""


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the server dies; leave at once if it already
    has (it died before the request was made). Elsewhere end of file on stdin does it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """grpc logs a failed bind on stderr itself; the server prints the one line that says it."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _listen(server: grpc.aio.Server, start: StartSettings) -> int:
    """Bind host:port (TLS with the server's certificate); the port, or 0 when it is taken."""
    address = f"{start.host}:{start.port}"
    try:
        with _quiet_stderr():
            if start.cert is not None and start.key is not None:
                key_pair = (start.key.encode(), start.cert.encode())
                credentials = grpc.ssl_server_credentials([key_pair])
                return server.add_secure_port(address, credentials)
            return server.add_insecure_port(address)
    except RuntimeError:  # grpc: "Failed to bind to address"
        return 0


async def _follow(
    servicer: health.aio.HealthServicer, reader: LineReader, state: ParentState
) -> None:
    """Read the server's lines as they come and publish the answers until the pipe ends."""
    loop = asyncio.get_running_loop()
    os.set_blocking(reader.fd, False)
    readable = asyncio.Event()
    loop.add_reader(reader.fd, readable.set)
    published: dict[str, int] = {}
    while not reader.ended:
        readable.clear()
        for line in reader.read():
            if line.strip():
                state.hear(line, time.monotonic())
        answers = state.answers(time.monotonic())
        for name, status in answers.items():
            if published.get(name) != status:
                await servicer.set(name, status)
        published = answers
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(readable.wait(), CHECK_SECONDS)
    loop.remove_reader(reader.fd)


async def serve(start: StartSettings, reader: LineReader) -> int:
    """Serve health until the server's pipe ends; 2 when the port cannot be had."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = _listen(server, start)
    if port == 0:
        print(f"error cannot listen on {start.host}:{start.port}", flush=True)
        return 2
    await servicer.set("", NOT_SERVING)  # until the server says otherwise
    await server.start()
    print(f"port {port}", flush=True)
    await _follow(servicer, reader, ParentState(start.stale_seconds))
    await server.stop(0.5)
    return 0


def main(argv: list[str]) -> int:
    """`python -m maxact.server.ops.health_process PARENT_PID`, started by the server."""
    die_with_parent(int(argv[0]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the server's to handle
    reader = LineReader(sys.stdin.fileno())
    first = reader.first_line()
    if not first:
        return 0
    settings: dict[str, Any] = json.loads(first)
    return asyncio.run(serve(StartSettings(**settings), reader))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
