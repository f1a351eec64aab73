"""Build and run the grpc.aio server: `maxact serve`, and an in-process handle for tests/demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sqlite3
import ssl
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from maxact.client.arguments import (
    MaxactParser,
    defaults_from_environment,
    nonnegative_int,
    positive_int,
)
from maxact.server import limits
from maxact.server.core.validate import ServerState
from maxact.server.data.dataset_writer import remove_stale_incoming
from maxact.server.data.datasets import DatasetCatalog
from maxact.server.data.input_cache import InputCache
from maxact.server.jobs.ray_executor import RayCluster, import_ray
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.jobs.shard_work import DEFAULT_SHARD_IMAGES
from maxact.server.jobs.store import Store, StoreError
from maxact.server.models.registry import ModelRegistry
from maxact.server.models.runtime import providers_for
from maxact.server.models.sessions import DEFAULT_MAX_BYTES as DEFAULT_SESSION_CACHE_BYTES
from maxact.server.models.upload import remove_stale_uploads
from maxact.server.ops.admission import AdmissionInterceptor
from maxact.server.ops.auth import BearerTokenInterceptor, read_token
from maxact.server.ops.call_observer import ObservingInterceptor
from maxact.server.ops.decode_guard import DecodeGuardInterceptor
from maxact.server.ops.logs import LOG_FORMATS, configure_logging
from maxact.server.ops.metrics import MetricsServer
from maxact.server.service.analysis_servicer import AnalysisServicer
from maxact.server.service.dataset_servicer import DatasetServicer
from maxact.server.service.model_servicer import DEFAULT_MAX_UPLOAD_BYTES, ModelServicer
from maxact.server.service.neuron_servicer import NeuronServicer
from maxact.server.service.receptive_field_servicer import ReceptiveFieldServicer
from maxact.server.service.scan_servicer import ScanServicer
from maxact.server.service.topk_servicer import TopKServicer
from maxact.v1 import (
    analysis_service_pb2,
    analysis_service_pb2_grpc,
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

log = logging.getLogger("maxact.server")

DEFAULT_PORT = 50051
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Beyond this many maxact calls in flight the admission interceptor answers RESOURCE_EXHAUSTED
# instead of queueing without bound (each scan holds threads and memory; a flood must not take
# the server down); health and reflection are always answered.
DEFAULT_MAX_CONCURRENT_RPCS = 64
SERVICE_NAMES = [
    descriptor.services_by_name[name].full_name
    for descriptor, name in [
        (model_service_pb2.DESCRIPTOR, "ModelService"),
        (receptive_field_service_pb2.DESCRIPTOR, "ReceptiveFieldService"),
        (dataset_service_pb2.DESCRIPTOR, "DatasetService"),
        (topk_service_pb2.DESCRIPTOR, "TopKService"),
        (scan_service_pb2.DESCRIPTOR, "ScanService"),
        (neuron_service_pb2.DESCRIPTOR, "NeuronService"),
        (analysis_service_pb2.DESCRIPTOR, "AnalysisService"),
    ]
]


@dataclass(frozen=True)
class ServerConfig:
    model_root: Path
    data_root: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    device: str = "auto"
    # Bearer token every RPC but health must carry; None: no authentication.
    auth_token: str | None = None
    # (certificate chain PEM, private key PEM) to serve TLS; None: plaintext.
    tls: tuple[bytes, bytes] | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    # SQLite file of persisted scans; None: a fresh temporary store (in-process servers).
    store: Path | None = None
    # Prometheus /metrics on this port (0: a free one); None: no metrics endpoint.
    metrics_port: int | None = None
    max_running_scans: int = 1
    session_cache_bytes: int = DEFAULT_SESSION_CACHE_BYTES
    checkpoint_images: int = 256
    # Ray cluster address ("auto" or host:port) to run persisted scans on; None: locally.
    ray_address: str | None = None
    ray_workers: int = 0  # at most this many Ray workers per scan (0: as the cluster allows)
    ray_worker_cpus: int = 1  # CPU cores per Ray worker on nodes without GPUs
    shard_images: int = DEFAULT_SHARD_IMAGES  # images per shard of a Ray scan
    # decoded-input cache (uint8 model inputs per dataset and geometry); None: no cache
    cache_dir: Path | None = None
    cache_bytes: int = 0
    # largest size of the store file; None: as large as the disk allows
    store_max_bytes: int | None = None
    limits: limits.Limits = field(default_factory=limits.Limits)


class StartupError(Exception):
    """The server cannot start; the message is one line saying why and what to do."""


@dataclass
class BuiltServer:
    """A started server and what its shutdown must stop first."""

    server: grpc.aio.Server
    port: int
    jobs: ScanJobs
    health: health.aio.HealthServicer
    metrics: MetricsServer | None = None
    ray: RayCluster | None = None

    async def stop(self, grace: float) -> None:
        """Health says NOT_SERVING, running scans stop at a checkpoint-able point (a restart
        resumes them), calls in flight get `grace` seconds."""
        for name in [*SERVICE_NAMES, ""]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.to_thread(self.jobs.shutdown, grace)
        await self.server.stop(grace)
        if self.ray is not None:
            await asyncio.to_thread(self.ray.close)
        if self.metrics is not None:
            self.metrics.stop()


def default_store_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "maxact" / "store.sqlite"


async def build_server(config: ServerConfig) -> BuiltServer:
    """A started server with every maxact service, health and reflection; returns the port."""
    state = _build_state(config)
    jobs, ray = await _build_jobs(config, state)
    server = _new_grpc_server(config)
    _add_maxact_servicers(server, config, state, jobs)
    health_servicer = _add_health_and_reflection(server)
    port = _listen(server, config)
    await server.start()
    for name in [*SERVICE_NAMES, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await asyncio.to_thread(jobs.resume_unfinished)
    metrics = None
    if config.metrics_port is not None:
        metrics = MetricsServer(config.host, config.metrics_port)
        log.info("metrics on http://%s:%d/metrics", config.host, metrics.port)
    return BuiltServer(server, port, jobs, health_servicer, metrics, ray)


def _build_state(config: ServerConfig) -> ServerState:
    """The process-wide settings (device, limits) and the model registry and datasets every
    servicer shares; leftovers of uploads an earlier run left half done are removed first."""
    providers_for(config.device)  # decide the device (and log it) once, up front
    limits.configure(config.limits)
    remove_stale_uploads(config.model_root)
    remove_stale_incoming(config.data_root)
    return ServerState(
        models=ModelRegistry(config.model_root, config.device, config.session_cache_bytes),
        datasets=DatasetCatalog(
            config.data_root,
            InputCache(config.cache_dir, config.cache_bytes) if config.cache_dir else None,
        ),
    )


async def _build_jobs(
    config: ServerConfig, state: ServerState
) -> tuple[ScanJobs, RayCluster | None]:
    """The persisted scans on their store, run locally or on the Ray cluster (connected here,
    off the event loop: connecting blocks)."""
    store_path = config.store or Path(tempfile.mkdtemp(prefix="maxact-store-")) / "store.sqlite"
    ray = None
    if config.ray_address:
        ray = await asyncio.to_thread(
            RayCluster,
            config.ray_address,
            config.model_root,
            config.data_root,
            config.device,
            config.ray_workers,
            config.ray_worker_cpus,
        )
    jobs = ScanJobs(
        Store.open(store_path, config.store_max_bytes),
        state.models,
        state.datasets,
        config.max_running_scans,
        config.checkpoint_images,
        shard_executor=ray.executor if ray is not None else None,
        shard_images=config.shard_images,
    )
    return jobs, ray


def _new_grpc_server(config: ServerConfig) -> grpc.aio.Server:
    """A grpc.aio server with the interceptors in their order and the message size bounds."""
    interceptors: list[grpc.aio.ServerInterceptor] = [
        ObservingInterceptor(),
        DecodeGuardInterceptor(),
    ]
    if config.auth_token:
        interceptors.append(BearerTokenInterceptor(config.auth_token))
    # last: it wraps the real handlers, so refused (unauthenticated) calls take no slot
    interceptors.append(AdmissionInterceptor(config.max_concurrent_rpcs))
    return grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )


def _add_maxact_servicers(
    server: grpc.aio.Server, config: ServerConfig, state: ServerState, jobs: ScanJobs
) -> None:
    """Register the seven maxact services: the live ones on the shared state, the persisted
    ones on the scan jobs."""
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(state, config.max_upload_bytes), server
    )
    receptive_field_service_pb2_grpc.add_ReceptiveFieldServiceServicer_to_server(
        ReceptiveFieldServicer(state), server
    )
    dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(DatasetServicer(state), server)
    topk_service_pb2_grpc.add_TopKServiceServicer_to_server(TopKServicer(state), server)
    scan_service_pb2_grpc.add_ScanServiceServicer_to_server(ScanServicer(jobs), server)
    neuron_service_pb2_grpc.add_NeuronServiceServicer_to_server(NeuronServicer(jobs), server)
    analysis_service_pb2_grpc.add_AnalysisServiceServicer_to_server(AnalysisServicer(jobs), server)


def _add_health_and_reflection(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """Health (returned: start and stop switch it) and reflection over every service."""
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
    return health_servicer


def _listen(server: grpc.aio.Server, config: ServerConfig) -> int:
    """Bind host:port (TLS when configured); the bound port, or StartupError saying what to
    change, since grpc itself only reports a failed bind as port 0 or a bare RuntimeError."""
    address = f"{config.host}:{config.port}"
    try:
        if config.tls is not None:
            cert_chain, private_key = config.tls
            credentials = grpc.ssl_server_credentials([(private_key, cert_chain)])
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # grpc: "Failed to bind to address"
        port = 0
    if port == 0:
        raise StartupError(
            f"cannot listen on {address}: the port is in use or the host is not an address "
            f"of this machine (pick another --port, or --port 0 for a free one)"
        )
    return port


class RunningServer:
    """A server on its own event-loop thread, for tests and `maxact demo`."""

    def __init__(self, config: ServerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port: int | None = None
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
            self._built = self._loop.run_until_complete(build_server(config))
            self._server, self.port = self._built.server, self._built.port
            self.metrics_port = self._built.metrics.port if self._built.metrics else None
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
        future = asyncio.run_coroutine_threadsafe(self._built.stop(grace), self._loop)
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
    *,
    auth_token: str | None = None,
    tls: tuple[bytes, bytes] | None = None,
    max_upload_mb: int | None = None,
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
    store: Path | None = None,
    checkpoint_images: int = 256,
    metrics_port: int | None = None,
    session_cache_mb: int | None = None,
    ray_address: str | None = None,
    ray_workers: int = 0,
    ray_worker_cpus: int = 1,
    shard_images: int = DEFAULT_SHARD_IMAGES,
    server_limits: limits.Limits | None = None,
    cache_dir: Path | None = None,
    cache_bytes: int = 0,
) -> RunningServer:
    """Start a server in this process (port 0: a free port); `.port`, `.address`, `.stop()`.

    `tls` is (certificate chain PEM, private key PEM); `auth_token` turns on bearer tokens.
    """
    return RunningServer(
        ServerConfig(
            Path(model_root),
            Path(data_root) if data_root else None,
            host,
            port,
            device,
            auth_token=auth_token,
            tls=tls,
            max_upload_bytes=(
                max_upload_mb * 1024 * 1024
                if max_upload_mb is not None
                else DEFAULT_MAX_UPLOAD_BYTES
            ),
            max_concurrent_rpcs=max_concurrent_rpcs,
            store=Path(store) if store is not None else None,
            checkpoint_images=checkpoint_images,
            metrics_port=metrics_port,
            session_cache_bytes=(
                session_cache_mb * 1024 * 1024
                if session_cache_mb is not None
                else DEFAULT_SESSION_CACHE_BYTES
            ),
            ray_address=ray_address,
            ray_workers=ray_workers,
            ray_worker_cpus=ray_worker_cpus,
            shard_images=shard_images,
            limits=server_limits or limits.Limits(),
            cache_dir=Path(cache_dir) if cache_dir is not None else None,
            cache_bytes=cache_bytes,
        )
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The `maxact serve` flags, grouped by concern; each can also come from MAXACT_*."""
    parser = MaxactParser(
        prog="maxact serve",
        description="Run the maxact server. Every option can also be given as the environment "
        "variable named after it in brackets (the command line wins).",
    )
    _add_network_flags(parser.add_argument_group("network and security"))
    _add_root_and_store_flags(parser.add_argument_group("models, datasets and the store"))
    _add_scan_and_cache_flags(parser.add_argument_group("scans, sessions and caches"))
    _add_ray_flags(parser.add_argument_group("Ray"))
    _add_limit_flags(parser.add_argument_group("limits"))
    _add_observability_flags(parser.add_argument_group("observability"))
    defaults_from_environment(parser)  # after every group: it reads all of parser's actions
    return parser.parse_args(argv)


def _add_network_flags(group: argparse._ArgumentGroup) -> None:
    """Where the server listens and who may call it (bearer token, TLS)."""
    group.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    group.add_argument(
        "--port",
        type=nonnegative_int,
        default=DEFAULT_PORT,
        help="gRPC port (default %(default)s; 0: any free port, logged at start)",
    )
    group.add_argument(
        "--auth-token-file",
        type=Path,
        help="require 'authorization: Bearer <token>' (the file's content) on every RPC but health",
    )
    group.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS")
    group.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")


def _add_root_and_store_flags(group: argparse._ArgumentGroup) -> None:
    """What the server reads (models, datasets) and where it keeps persisted scans."""
    group.add_argument(
        "--model-root",
        type=Path,
        required=True,
        help="folder of .onnx models (and NAME.preprocess.json sidecars); uploads land here",
    )
    group.add_argument(
        "--data-root",
        type=Path,
        help="folder whose sub-folders are the datasets scans and topk read (optional)",
    )
    group.add_argument(
        "--store",
        type=Path,
        default=None,
        help=f"SQLite store of persisted scans (default {default_store_path()})",
    )
    group.add_argument(
        "--store-max-mb",
        type=positive_int,
        default=None,
        help="largest size of the store; when full, new scans get RESOURCE_EXHAUSTED "
        "(default: as large as the disk allows)",
    )


def _add_scan_and_cache_flags(group: argparse._ArgumentGroup) -> None:
    """How scans run on this machine and what the server keeps in memory or on disk."""
    group.add_argument(
        "--max-running-scans",
        type=positive_int,
        default=1,
        help="scans running at once; more wait queued (default %(default)s)",
    )
    group.add_argument(
        "--checkpoint-images",
        type=positive_int,
        default=256,
        help="a running scan checkpoints after this many images (default %(default)s)",
    )
    group.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="onnxruntime device; auto: CUDA when available, else CPU (default %(default)s)",
    )
    group.add_argument(
        "--session-cache-mb",
        type=positive_int,
        default=DEFAULT_SESSION_CACHE_BYTES // (1024 * 1024),
        help="memory budget of cached onnxruntime sessions, estimated (default %(default)s)",
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="keep decoded model inputs here, so repeated scans of a dataset read instead of "
        "decoding (invalidated per image when its file changes)",
    )
    group.add_argument(
        "--cache-gb",
        type=float,
        default=10.0,
        help="size bound of --cache-dir; least recently used datasets go first "
        "(default %(default)s)",
    )


def _add_ray_flags(group: argparse._ArgumentGroup) -> None:
    """Running persisted scans on a Ray cluster instead of in this process."""
    group.add_argument(
        "--ray-address",
        default=os.environ.get("MAXACT_RAY_ADDRESS") or None,
        help="run persisted scans on this Ray cluster ('auto' or HOST:PORT; needs the 'ray'"
        " extra); default: locally",
    )
    group.add_argument(
        "--ray-workers",
        type=nonnegative_int,
        default=0,
        help="at most this many Ray workers per scan (default: one per GPU, else per"
        " --ray-worker-cpus cores of the cluster)",
    )
    group.add_argument(
        "--ray-worker-cpus",
        type=positive_int,
        default=1,
        help="CPU cores per Ray worker on nodes without GPUs (default %(default)s)",
    )
    group.add_argument(
        "--shard-images",
        type=positive_int,
        default=DEFAULT_SHARD_IMAGES,
        help="images per shard of a Ray scan (default %(default)s)",
    )


def _add_limit_flags(group: argparse._ArgumentGroup) -> None:
    """Size and concurrency bounds, so one request or a flood cannot take the server down."""
    group.add_argument(
        "--max-upload-mb",
        type=positive_int,
        default=DEFAULT_MAX_UPLOAD_BYTES // (1024 * 1024),
        help="largest model upload accepted (MiB; default %(default)s)",
    )
    group.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=limits.DEFAULT_MAX_IMAGE_PIXELS,
        help="largest image decoded, in pixels, read from its header (default %(default)s)",
    )
    group.add_argument(
        "--max-input-pixels",
        type=positive_int,
        default=limits.DEFAULT_MAX_INPUT_PIXELS,
        help="largest model input (and resized image before a crop), in pixels "
        "(default %(default)s)",
    )
    group.add_argument(
        "--max-request-mb",
        type=positive_int,
        default=limits.DEFAULT_MAX_REQUEST_BYTES // (1024 * 1024),
        help="bytes of client-streamed images one request may hold at once (MiB; "
        "default %(default)s)",
    )
    group.add_argument(
        "--max-concurrent-rpcs",
        type=positive_int,
        default=DEFAULT_MAX_CONCURRENT_RPCS,
        help="calls in flight beyond this get RESOURCE_EXHAUSTED (default %(default)s)",
    )


def _add_observability_flags(group: argparse._ArgumentGroup) -> None:
    """Metrics endpoint and log format."""
    group.add_argument(
        "--metrics-port",
        type=nonnegative_int,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics",
    )
    # text by default: people start `maxact serve` at a terminal; collectors (the container
    # image sets MAXACT_LOG_FORMAT=json) want one JSON object per line.
    group.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text for people, json for log collectors: JSON Lines (default %(default)s)",
    )


def security_from_args(args: argparse.Namespace) -> tuple[str | None, tuple[bytes, bytes] | None]:
    """(token, (cert, key)) from the command line; ValueError/OSError say what is wrong."""
    token = read_token(args.auth_token_file) if args.auth_token_file else None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    tls = (args.tls_cert.read_bytes(), args.tls_key.read_bytes()) if args.tls_cert else None
    if args.tls_cert:
        try:  # grpc only says "Failed to bind to address" for a key that does not fit
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(args.tls_cert, args.tls_key)
        except ssl.SSLError as exc:
            raise ValueError(
                f"--tls-key {args.tls_key.name} does not match --tls-cert {args.tls_cert.name}"
                f" (or one is not PEM): {exc.reason or exc}"
            ) from None
    return token, tls


async def _serve(config: ServerConfig, log_format: str) -> None:
    built = await build_server(config)
    port = built.port
    log.info(
        "maxact serving on %s:%d (models: %s, data: %s, %s, %s)",
        config.host,
        port,
        config.model_root,
        config.data_root,
        "TLS" if config.tls else "plaintext",
        "bearer token required" if config.auth_token else "no authentication",
    )
    ready = f"maxact serving on {config.host}:{port}"  # scripts wait for this line on stdout
    if log_format == "json":
        ready = json.dumps({"message": ready, "host": config.host, "port": port})
    print(ready, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing running calls (grace 10 s)")
    await built.stop(10)


def _startup_failure(message: str) -> int:
    """One line on stderr, no traceback: start-up errors are the operator's to fix."""
    print(f"maxact serve: error: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    configure_logging(args.log_format)
    try:
        token, tls = security_from_args(args)
    except (ValueError, OSError) as exc:
        return _startup_failure(str(exc))
    if not args.model_root.is_dir():
        log.error("--model-root %s is not a folder", args.model_root)
        return 2
    if args.data_root is not None and not args.data_root.is_dir():
        log.error("--data-root %s is not a folder", args.data_root)
        return 2
    config = ServerConfig(
        args.model_root,
        args.data_root,
        args.host,
        args.port,
        args.device,
        auth_token=token,
        tls=tls,
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        store=args.store or default_store_path(),
        max_running_scans=args.max_running_scans,
        store_max_bytes=args.store_max_mb * 1024 * 1024 if args.store_max_mb else None,
        checkpoint_images=args.checkpoint_images,
        metrics_port=args.metrics_port,
        session_cache_bytes=args.session_cache_mb * 1024 * 1024,
        ray_address=args.ray_address,
        ray_workers=args.ray_workers,
        ray_worker_cpus=args.ray_worker_cpus,
        shard_images=args.shard_images,
        limits=limits.Limits(
            max_image_pixels=args.max_image_pixels,
            max_input_pixels=args.max_input_pixels,
            max_request_bytes=args.max_request_mb * 1024 * 1024,
        ),
        cache_dir=args.cache_dir,
        cache_bytes=int(args.cache_gb * 1024**3),
    )
    if args.ray_address:
        try:
            import_ray()
        except RuntimeError as exc:
            return _startup_failure(str(exc))
    try:
        asyncio.run(_serve(config, args.log_format))
    except (StartupError, StoreError) as exc:
        return _startup_failure(str(exc))
    except (OSError, sqlite3.Error) as exc:
        return _startup_failure(f"{type(exc).__name__}: {exc}")
    return 0
