"""Serve the HTTP app with uvicorn inside the running event loop, beside the grpc.aio server
(one loop: a second loop in another thread breaks both, uvicorn#1306).

The socket is bound here, so port 0 gives a free port known before serving starts; TLS uses
the gRPC face's certificate and key; uvicorn's own signal handling is left out (the assembly
owns SIGINT/SIGTERM and stops both faces)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

# largest request head uvicorn's h11 parser accepts
MAX_HEADER_BYTES = 64 * 1024


class _Server(uvicorn.Server):
    """uvicorn.Server without its signal handlers (they would replace the assembly's)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def ssl_context(cert_chain: bytes, private_key: bytes) -> ssl.SSLContext:
    """A server TLS context from PEM bytes (Python loads key material only from files: they
    live in a private temporary folder for the moment of loading)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="maxact-tls-") as folder:
        cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        for path, data in ((cert, cert_chain), (key, private_key)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
        context.load_cert_chain(cert, key)
    return context


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0: a free port); OSError when it cannot bind.

    Made with proto IPPROTO_TCP as asyncio's own listeners are: asyncio sets TCP_NODELAY only
    on connections of such sockets, and without it every answer on a kept-alive connection
    waits ~40 ms for a delayed ACK (headers and body go out as two writes)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class HttpServer:
    """The HTTP face on its bound socket, served as a task of the current event loop."""

    def __init__(
        self, app: FastAPI, sock: socket.socket, tls: tuple[bytes, bytes] | None = None
    ) -> None:
        # uvicorn's start/stop chatter stays out of the server's log (warnings and errors stay)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self.port = int(sock.getsockname()[1])
        self.tls = tls is not None
        config = uvicorn.Config(
            app,
            log_config=None,  # the server's own logging (text or JSON lines)
            access_log=False,  # the app logs one line per request itself
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        config.load()
        if tls is not None:
            config.ssl = ssl_context(*tls)
        self._sock = sock
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve in the background; returns once uvicorn listens (or raises its failure)."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float) -> None:
        """Stop accepting, give requests in flight `grace` seconds, then close the rest
        (open event streams included)."""
        if self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = max(int(grace), 1)
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace + 5)
        except asyncio.TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sock.close()
