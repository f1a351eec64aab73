"""Connecting to a Ray cluster with a bound on the wait.

`ray.init(address=...)` retries forever at an address where no Ray cluster answers (a closed
port, a port that accepts and stays silent, an HTTP server): the server would neither serve
nor exit. So the address is checked first (`auto` or HOST:PORT with a port in 1..65535), a
TCP connection is retried until the deadline, and the connection itself runs in a daemon
thread that is abandoned at the deadline: the caller gets one sentence naming the address.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

RETRY_SECONDS = 0.5

T = TypeVar("T")


class RayConnectError(Exception):
    """No Ray cluster at the address within the time allowed; the message is one line."""


def host_and_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT address; None for `auto`; RayConnectError otherwise."""
    if address == "auto":
        return None
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayConnectError(
            f"--ray-address {address[:200]!r} is not 'auto' or HOST:PORT (port 1..65535)"
        )
    return host, int(port)


def _wait_for_listener(host: str, port: int, address: str, deadline: float) -> None:
    """Return once something accepts TCP at host:port; retry refusals until the deadline."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(remaining, 0.01)):
                return
        except OSError as exc:
            if time.monotonic() + RETRY_SECONDS >= deadline:
                raise RayConnectError(
                    f"no Ray cluster at --ray-address {address}: "
                    f"{exc.strerror or type(exc).__name__} until the --ray-connect-seconds "
                    "deadline"
                ) from None
            time.sleep(RETRY_SECONDS)


def connect_within(connect: Callable[[], T], address: str, seconds: float) -> T:
    """`connect()` (which opens the Ray connection) when it finishes within `seconds`;
    RayConnectError naming `address` when it fails or does not finish in time."""
    deadline = time.monotonic() + seconds
    target = host_and_port(address)
    if target is not None:
        _wait_for_listener(*target, address, deadline)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = connect()
        except BaseException as exc:  # reported to the caller, in one line
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="ray-connect", daemon=True)
    thread.start()
    thread.join(max(deadline - time.monotonic(), 0.0))
    if thread.is_alive():
        raise RayConnectError(
            f"no Ray cluster answered at --ray-address {address} within {seconds:g} s "
            "(--ray-connect-seconds)"
        )
    if "error" in outcome:
        error = outcome["error"]
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise RayConnectError(
            f"cannot connect to the Ray cluster at --ray-address {address}: "
            f"{type(error).__name__}{': ' + first if first else ''}"
        )
    return outcome["value"]  # type: ignore[return-value]
