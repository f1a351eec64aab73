"""Build and run the grpc.aio server: `maxact serve`, and an in-process handle for tests/demo."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import SQLAlchemyError

from maxact.server import limits
from maxact.server.core.validate import ServerState
from maxact.server.data.dataset_writer import remove_stale_incoming
from maxact.server.data.datasets import DatasetCatalog
from maxact.server.data.input_cache import InputCache
from maxact.server.http.app import create_http_app
from maxact.server.http.context import HttpContext
from maxact.server.http.serve import HttpServer, bind
from maxact.server.jobs.database import check_location, is_url
from maxact.server.jobs.ray_connect import (
    RayConnectError,
    connect_within,
    host_and_port,
)
from maxact.server.jobs.ray_executor import RayCluster, import_ray
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.jobs.store import Store, StoreError
from maxact.server.models.registry import ModelRegistry
from maxact.server.models.runtime import providers_for
from maxact.server.models.upload import remove_stale_uploads
from maxact.server.ops import memory
from maxact.server.ops.admission import AdmissionInterceptor
from maxact.server.ops.auth import BearerTokenInterceptor, read_token
from maxact.server.ops.call_observer import ObservingInterceptor
from maxact.server.ops.decode_guard import DecodeGuardInterceptor
from maxact.server.ops.health_port import HealthPortError, HealthProcess, ServerHealth
from maxact.server.ops.health_process import StartSettings
from maxact.server.ops.logs import configure_logging
from maxact.server.ops.metrics import MetricsServer
from maxact.server.ops.slots import Slots
from maxact.server.ops.tracing import (
    TracingUnavailable,
    grpc_interceptor,
    instrument_http,
    tracer_provider,
)
from maxact.server.serve_flags import parse_serve_args
from maxact.server.service.analysis_servicer import AnalysisServicer
from maxact.server.service.dataset_servicer import DatasetServicer
from maxact.server.service.model_servicer import ModelServicer
from maxact.server.service.neuron_servicer import NeuronServicer
from maxact.server.service.receptive_field_servicer import ReceptiveFieldServicer
from maxact.server.service.response_servicer import ResponseServicer
from maxact.server.service.scan_servicer import ScanServicer
from maxact.server.service.topk_servicer import TopKServicer
from maxact.server.settings import ServeSettings, default_store_path
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
    response_service_pb2,
    response_service_pb2_grpc,
    scan_service_pb2,
    scan_service_pb2_grpc,
    topk_service_pb2,
    topk_service_pb2_grpc,
)

log = logging.getLogger("maxact.server")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
# The event loop (health checks, every call's messages) waits for the GIL behind each busy
# scan, decode and reduction thread in turn, each time it wakes; shorter turns let it in
# sooner. Measured with bench/health_bench.py (BENCHMARKS.md).
GIL_SWITCH_INTERVAL_S = 0.0005
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
        (response_service_pb2.DESCRIPTOR, "ResponseService"),
    ]
]


@dataclass(frozen=True)
class ServerConfig:
    """What a server is built from: its settings and the secrets they point to, read."""

    settings: ServeSettings
    # Bearer token every RPC but health must carry; None: no authentication.
    auth_token: str | None = None
    # (certificate chain PEM, private key PEM) to serve TLS; None: plaintext.
    tls: tuple[bytes, bytes] | None = None

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> ServerConfig:
        """The token and TLS files read and checked; ValueError/OSError say what is wrong."""
        return cls(settings, *security_from_settings(settings))


class StartupError(Exception):
    """The server cannot start; the message is one line saying why and what to do."""


class RayUnavailable(StartupError):
    """No Ray cluster at --ray-address in time; its connection thread may still hang."""


@dataclass
class BuiltServer:
    """A started server and what its shutdown must stop first."""

    server: grpc.aio.Server
    port: int
    jobs: ScanJobs
    health: ServerHealth
    metrics: MetricsServer | None = None
    ray: RayCluster | None = None
    http: HttpServer | None = None
    tracing: Any = None  # the OpenTelemetry TracerProvider with --otel-endpoint

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    async def stop(self, grace: float) -> None:
        """Health says NOT_SERVING (the health process first), running scans stop at a
        checkpoint-able point (a restart resumes them), calls in flight on both faces get
        `grace` seconds; the health process ends last."""
        await self.health.set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.to_thread(self.jobs.shutdown, grace)
        faces = [self.server.stop(grace)]
        if self.http is not None:
            faces.append(self.http.stop(grace))
        await asyncio.gather(*faces)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # sends the spans still batched
        if self.ray is not None:
            await asyncio.to_thread(self.ray.close)
        if self.metrics is not None:
            self.metrics.stop()
        await self.health.close()


async def build_server(config: ServerConfig) -> BuiltServer:
    """A started server with every maxact service, health and reflection; returns the port."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    state = _build_state(config)
    jobs, ray = await _build_jobs(config, state)
    slots = Slots(config.settings.max_concurrent_rpcs)
    tracing = _tracing(config)
    server = _new_grpc_server(config, slots, tracing)
    _add_maxact_servicers(server, config, state, jobs)
    servicer = _add_health_and_reflection(server)
    port = _listen(server, config)
    context = HttpContext(state, jobs, config.settings, config.auth_token, slots)
    http = _http_server(config, context, tracing)
    server_health = ServerHealth(servicer, [*SERVICE_NAMES, ""], _health_process(config))
    await server.start()
    if http is not None:
        await http.start()
    await server_health.set_all(health_pb2.HealthCheckResponse.SERVING)
    server_health.start_heartbeat()
    await asyncio.to_thread(jobs.resume_unfinished)
    metrics = None
    if config.settings.metrics_port is not None:
        metrics = MetricsServer(config.settings.host, config.settings.metrics_port)
        log.info("metrics on http://%s:%d/metrics", config.settings.host, metrics.port)
    return BuiltServer(server, port, jobs, server_health, metrics, ray, http, tracing)


def _health_process(config: ServerConfig) -> HealthProcess | None:
    """The --health-port process, listening (None without the flag); StartupError when it
    cannot listen. Started on the event loop's thread, which lives as long as the server."""
    settings = config.settings
    if settings.health_port is None:
        return None
    cert, key = config.tls if config.tls is not None else (None, None)
    start = StartSettings(
        settings.host,
        settings.health_port,
        settings.health_stale_seconds,
        cert.decode() if cert is not None else None,
        key.decode() if key is not None else None,
    )
    try:
        return HealthProcess.start(start)
    except HealthPortError as exc:
        raise StartupError(f"--health-port: {exc}") from None


def _tracing(config: ServerConfig) -> Any:
    """The TracerProvider of --otel-endpoint (None: no tracing)."""
    endpoint = config.settings.otel_endpoint
    if not endpoint:
        return None
    try:
        return tracer_provider(endpoint)
    except TracingUnavailable as exc:
        raise StartupError(str(exc)) from None


def _http_server(config: ServerConfig, context: HttpContext, tracing: Any) -> HttpServer | None:
    """The HTTP face on its bound socket (None with --no-http); StartupError when the port is
    taken."""
    settings = config.settings
    if not settings.http:
        return None
    try:
        sock = bind(settings.host, settings.http_port)
    except OSError as exc:
        raise StartupError(
            f"cannot listen for HTTP on {settings.host}:{settings.http_port}: {exc.strerror} "
            f"(pick another --http-port, 0 for a free one, or --no-http)"
        ) from None
    app = create_http_app(context)
    if tracing is not None:
        instrument_http(app, tracing)
    return HttpServer(app, sock, config.tls)


def _build_state(config: ServerConfig) -> ServerState:
    """The process-wide settings (device, limits) and the model registry and datasets every
    servicer shares; leftovers of uploads an earlier run left half done are removed first."""
    settings = config.settings
    providers_for(settings.device)  # decide the device (and log it) once, up front
    limits.configure(limits.Limits.of(settings))
    memory.BUDGET.configure(
        settings.memory_budget_bytes or memory.BUDGET.total_bytes, settings.memory_wait_seconds
    )
    log.info(
        "memory budget %d MB (caches up to %d MB)",
        memory.BUDGET.total_bytes // 2**20,
        memory.BUDGET.cache_bytes // 2**20,
    )
    remove_stale_uploads(settings.model_root)
    remove_stale_incoming(settings.data_root)
    return ServerState(
        models=ModelRegistry(settings.model_root, settings.device, settings.session_cache_bytes),
        datasets=DatasetCatalog(
            settings.data_root,
            InputCache(settings.cache_dir, settings.cache_bytes) if settings.cache_dir else None,
        ),
    )


async def _build_jobs(
    config: ServerConfig, state: ServerState
) -> tuple[ScanJobs, RayCluster | None]:
    """The persisted scans on their store, run locally or on the Ray cluster (connected here,
    off the event loop: connecting blocks)."""
    settings = config.settings
    store_location = (
        settings.store or Path(tempfile.mkdtemp(prefix="maxact-store-")) / "store.sqlite"
    )
    try:
        check_location(store_location)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    if is_url(store_location) and settings.state_dir is None:
        raise StoreError(
            "--state-dir is required with a PostgreSQL --store: a folder every replica mounts"
        )
    store = await asyncio.to_thread(
        Store.open, store_location, settings.store_max_bytes, store_password(settings)
    )
    ray = None
    if settings.ray_address:
        address = settings.ray_address

        def connect() -> RayCluster:
            return RayCluster(
                address,
                settings.model_root,
                settings.data_root,
                settings.device,
                settings.ray_workers,
                settings.ray_worker_cpus,
            )

        try:
            ray = await asyncio.to_thread(
                connect_within, connect, address, settings.ray_connect_seconds
            )
        except RayConnectError as exc:
            raise RayUnavailable(str(exc)) from None
    jobs = ScanJobs(
        store,
        state.models,
        state.datasets,
        settings.max_running_scans,
        settings.checkpoint_images,
        shard_executor=ray.executor if ray is not None else None,
        shard_images=settings.shard_images,
        lease_seconds=settings.lease_seconds,
        state_dir=settings.state_dir,
        max_responses_bytes=settings.max_responses_bytes,
    )
    return jobs, ray


def store_password(settings: ServeSettings) -> str | None:
    """The PostgreSQL password from --store-password(-file) / MAXACT_STORE_PASSWORD, if any
    (a password in the --store URL wins)."""
    if settings.store_password is not None:
        return settings.store_password.get_secret_value()
    if settings.store_password_file is None:
        return None
    try:
        return settings.store_password_file.read_text().rstrip("\r\n")
    except OSError as exc:
        raise StoreError(
            f"--store-password-file {settings.store_password_file} cannot be read "
            f"({exc.strerror or exc})"
        ) from None


def _new_grpc_server(config: ServerConfig, slots: Slots, tracing: Any) -> grpc.aio.Server:
    """A grpc.aio server with the interceptors in their order and the message size bounds;
    `slots` are the admission slots it shares with the HTTP face; `tracing` a TracerProvider
    (first: the span covers the whole call) or None."""
    interceptors: list[grpc.aio.ServerInterceptor] = [
        ObservingInterceptor(),
        DecodeGuardInterceptor(),
    ]
    if tracing is not None:
        interceptors.insert(0, grpc_interceptor(tracing))
    if config.auth_token:
        interceptors.append(BearerTokenInterceptor(config.auth_token))
    # last: it wraps the real handlers, so refused (unauthenticated) calls take no slot
    interceptors.append(AdmissionInterceptor(config.settings.max_concurrent_rpcs, slots))
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
    """Register the eight maxact services: the live ones on the shared state, the persisted
    ones on the scan jobs."""
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(state, config.settings.max_upload_bytes), server
    )
    receptive_field_service_pb2_grpc.add_ReceptiveFieldServiceServicer_to_server(
        ReceptiveFieldServicer(state), server
    )
    dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(DatasetServicer(state), server)
    topk_service_pb2_grpc.add_TopKServiceServicer_to_server(TopKServicer(state), server)
    scan_service_pb2_grpc.add_ScanServiceServicer_to_server(ScanServicer(jobs), server)
    neuron_service_pb2_grpc.add_NeuronServiceServicer_to_server(NeuronServicer(jobs), server)
    analysis_service_pb2_grpc.add_AnalysisServiceServicer_to_server(AnalysisServicer(jobs), server)
    response_service_pb2_grpc.add_ResponseServiceServicer_to_server(ResponseServicer(jobs), server)


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
    address = f"{config.settings.host}:{config.settings.port}"
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
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self.health_port: int | None = None
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

    @property
    def http_address(self) -> str:
        """127.0.0.1:PORT of the HTTP face (ValueError when it is off)."""
        if self.http_port is None:
            raise ValueError("this server serves no HTTP (http=False)")
        return f"127.0.0.1:{self.http_port}"

    @property
    def http_url(self) -> str:
        """The HTTP face's base URL, http:// or https:// as it serves."""
        scheme = "https" if self.config.tls is not None else "http"
        return f"{scheme}://{self.http_address}"

    def _run(self, config: ServerConfig) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._built = self._loop.run_until_complete(build_server(config))
            self._server, self.port = self._built.server, self._built.port
            self.metrics_port = self._built.metrics.port if self._built.metrics else None
            self.http_port = self._built.http_port
            self.health_port = self._built.health.port
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
    *,
    auth_token: str | None = None,
    tls: tuple[bytes, bytes] | None = None,
    **settings: Any,
) -> RunningServer:
    """Start a server in this process (on a free port); `.port`, `.address`, `.stop()`.

    `settings` are ServeSettings fields (`device="cpu"`, `store=PATH`, `max_upload_mb=1`,
    ...), with `maxact serve`'s defaults; `tls` is (certificate chain PEM, private key PEM);
    `auth_token` turns on bearer tokens.
    """
    resolved = ServeSettings.in_process(model_root=model_root, data_root=data_root, **settings)
    config = ServerConfig.from_settings(resolved)
    if auth_token is not None or tls is not None:
        config = replace(config, auth_token=auth_token or config.auth_token, tls=tls or config.tls)
    return RunningServer(config)


def parse_args(argv: list[str]) -> ServeSettings:
    """The `maxact serve` flags, grouped by concern; each can also come from MAXACT_*."""
    return parse_serve_args(argv)


def security_from_settings(
    settings: ServeSettings,
) -> tuple[str | None, tuple[bytes, bytes] | None]:
    """(token, (cert, key)) read from their files; ValueError/OSError say what is wrong."""
    token = read_token(settings.auth_token_file) if settings.auth_token_file else None
    cert, key = settings.tls_cert, settings.tls_key
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        return token, None
    try:  # grpc only says "Failed to bind to address" for a key that does not fit
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ValueError(
            f"--tls-key {key.name} does not match --tls-cert {cert.name}"
            f" (or one is not PEM): {exc.reason or exc}"
        ) from None
    return token, (cert.read_bytes(), key.read_bytes())


async def _serve(config: ServerConfig) -> None:
    built = await build_server(config)
    port, host = built.port, config.settings.host
    log.info(
        "maxact serving on %s:%d (models: %s, data: %s, %s, %s)",
        host,
        port,
        config.settings.model_root,
        config.settings.data_root,
        "TLS" if config.tls else "plaintext",
        "bearer token required" if config.auth_token else "no authentication",
    )
    ready = f"maxact serving on {host}:{port}"  # scripts wait for this line on stdout
    http = ""
    if built.http_port is not None:
        http = f"{'https' if config.tls else 'http'}://{_url_host(host)}:{built.http_port}"
        ready += f" (HTTP API and web UI on {http})"
    health_port = built.health.port
    if health_port is not None:
        ready += f" (health on {_url_host(host)}:{health_port})"
    if config.settings.log_format == "json":
        fields = {"message": ready, "host": host, "port": port}
        fields |= {"http": http} if http else {}
        ready = json.dumps(fields | ({"health_port": health_port} if health_port else {}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the line: a script may signal at once
        loop.add_signal_handler(sig, stop.set)
    print(ready, flush=True)
    await stop.wait()
    log.info("shutting down: finishing running calls (grace 10 s)")
    await built.stop(10)


def _url_host(host: str) -> str:
    """A host as it goes into a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def _startup_failure(message: str) -> int:
    """One line on stderr, no traceback: start-up errors are the operator's to fix."""
    print(f"maxact serve: error: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    configure_logging(settings.log_format)
    try:
        config = ServerConfig.from_settings(settings)
    except (ValueError, OSError) as exc:
        return _startup_failure(str(exc))
    if not settings.model_root.is_dir():
        log.error("--model-root %s is not a folder", settings.model_root)
        return 2
    if settings.data_root is not None and not settings.data_root.is_dir():
        log.error("--data-root %s is not a folder", settings.data_root)
        return 2
    if settings.store is None:
        config = replace(
            config, settings=settings.model_copy(update={"store": default_store_path()})
        )
    if settings.ray_address:
        try:
            host_and_port(settings.ray_address)
            import_ray()
        except (RayConnectError, RuntimeError) as exc:
            return _startup_failure(str(exc))
    try:
        asyncio.run(_serve(config))
    except RayUnavailable as exc:
        # the abandoned connection thread would hang the exit or log Ray's retries: leave now
        code = _startup_failure(str(exc))
        os._exit(code)
    except (StartupError, StoreError) as exc:
        return _startup_failure(str(exc))
    except (OSError, SQLAlchemyError) as exc:
        return _startup_failure(f"{type(exc).__name__}: {exc}")
    return 0
