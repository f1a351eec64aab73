"""Build and run the grpc.aio server: `maxact serve`, and an in-process handle for tests/demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from maxact.v1 import (
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    neuron_service_pb2,
    neuron_service_pb2_grpc,
    receptive_field_service_pb2,
    receptive_field_service_pb2_grpc,
    scan_service_pb2,
    scan_service_pb2_grpc,
    topk_service_pb2,
    topk_service_pb2_grpc,
)

from .datasets import DatasetCatalog
from .models import ModelRegistry
from .runtime import providers_for
from .service.dataset_servicer import DatasetServicer
from .service.lookup import ServerState
from .service.model_servicer import ModelServicer
from .service.receptive_field_servicer import ReceptiveFieldServicer
from .service.scan_servicer import NeuronServicer, ScanServicer
from .service.topk_servicer import TopKServicer

log = logging.getLogger("maxact.server")

DEFAULT_PORT = 50051
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVICE_NAMES = [
    descriptor.services_by_name[name].full_name
    for descriptor, name in [
        (model_service_pb2.DESCRIPTOR, "ModelService"),
        (receptive_field_service_pb2.DESCRIPTOR, "ReceptiveFieldService"),
        (dataset_service_pb2.DESCRIPTOR, "DatasetService"),
        (topk_service_pb2.DESCRIPTOR, "TopKService"),
        (scan_service_pb2.DESCRIPTOR, "ScanService"),
        (neuron_service_pb2.DESCRIPTOR, "NeuronService"),
    ]
]


@dataclass(frozen=True)
class ServerConfig:
    model_root: Path
    data_root: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    device: str = "auto"


async def build_server(config: ServerConfig) -> tuple[grpc.aio.Server, int]:
    """A started server with every maxact service, health and reflection; returns the port."""
    providers_for(config.device)  # decide the device (and log it) once, up front
    state = ServerState(
        models=ModelRegistry(config.model_root, config.device),
        datasets=DatasetCatalog(config.data_root),
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(state), server)
    receptive_field_service_pb2_grpc.add_ReceptiveFieldServiceServicer_to_server(
        ReceptiveFieldServicer(state), server
    )
    dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(DatasetServicer(state), server)
    topk_service_pb2_grpc.add_TopKServiceServicer_to_server(TopKServicer(state), server)
    scan_service_pb2_grpc.add_ScanServiceServicer_to_server(ScanServicer(), server)
    neuron_service_pb2_grpc.add_NeuronServiceServicer_to_server(NeuronServicer(), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    await server.start()
    for name in [*SERVICE_NAMES, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


class RunningServer:
    """A server on its own event-loop thread, for tests and `maxact demo`."""

    def __init__(self, config: ServerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self._thread = threading.Thread(
            target=self._run, args=(config,), name="maxact-server-loop", daemon=True
        )
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, config: ServerConfig) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server, self.port = self._loop.run_until_complete(build_server(config))
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self, grace: float = 1.0) -> None:
        if self._server is None or not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop)
        future.result(timeout=grace + 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    model_root: Path,
    data_root: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    device: str = "auto",
) -> RunningServer:
    """Start a server in this process (port 0: a free port); `.port`, `.address`, `.stop()`."""
    return RunningServer(
        ServerConfig(Path(model_root), Path(data_root) if data_root else None, host, port, device)
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="maxact serve", description="Run the maxact server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--model-root", type=Path, required=True)
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--store", type=Path, help="SQLite store for scans (not used yet)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--auth-token-file", type=Path, help="not supported yet")
    parser.add_argument("--tls-cert", type=Path, help="not supported yet")
    parser.add_argument("--tls-key", type=Path, help="not supported yet")
    return parser.parse_args(argv)


async def _serve(config: ServerConfig) -> None:
    server, port = await build_server(config)
    log.info(
        "maxact serving on %s:%d (models: %s, data: %s)",
        config.host,
        port,
        config.model_root,
        config.data_root,
    )
    print(f"maxact serving on {config.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing running calls (grace 10 s)")
    await server.stop(10)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for option in ("auth_token_file", "tls_cert", "tls_key"):
        if getattr(args, option):
            log.error("--%s is not supported in this version", option.replace("_", "-"))
            return 2
    if not args.model_root.is_dir():
        log.error("--model-root %s is not a folder", args.model_root)
        return 2
    if args.data_root is not None and not args.data_root.is_dir():
        log.error("--data-root %s is not a folder", args.data_root)
        return 2
    config = ServerConfig(args.model_root, args.data_root, args.host, args.port, args.device)
    asyncio.run(_serve(config))
    return 0
