"""The server's settings, defined once: `maxact serve`'s flags and their help, the MAXACT_*
environment variables and the in-process server of tests and the demo all derive from
`ServeSettings`, so their defaults cannot drift.

Adding a setting is one field here: its name is the flag (`max_foo_mb` -> `--max-foo-mb`) and
the environment variable (`MAXACT_MAX_FOO_MB`), its description is the `--help` text, its
`group` places it in `serve --help`, its type and bounds validate the flag, the variable and
`start_server(max_foo_mb=...)` alike. Sizes are given in the unit the flag names (MiB, GiB);
the `*_bytes` properties convert them once.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "MAXACT_"
DEFAULT_PORT = 50051
DEFAULT_HTTP_PORT = 8080
MIB = 1024 * 1024
GIB = 1024 * MIB
# The defaults live here (this module imports nothing of the server, so every module can read
# its own default from it); the modules that use them import them from here.
DEFAULT_MAX_UPLOAD_MB = 2048
DEFAULT_CHECKPOINT_IMAGES = 256
DEFAULT_SHARD_IMAGES = 256
DEFAULT_MAX_RESPONSES_MB = 1024
DEFAULT_SESSION_CACHE_MB = 2048
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
DEFAULT_MAX_INPUT_PIXELS = 2048 * 2048
DEFAULT_MAX_REQUEST_MB = 512
DEFAULT_MAX_IMAGE_BYTES = 64 * MIB  # the gRPC message bound: what an upload can carry
DEFAULT_MAX_CLASSES = 10_000
DEFAULT_MAX_CLASS_STATISTICS_MB = 1024
DEFAULT_RAY_CONNECT_SECONDS = 30.0
# A replica that stops renewing a scan's lease for this long counts as dead: another takes the
# scan over from its last checkpoint.
DEFAULT_LEASE_SECONDS = 15.0
# Beyond this many maxact calls in flight the admission interceptor answers RESOURCE_EXHAUSTED
# instead of queueing without bound (each scan holds threads and memory; a flood must not take
# the server down); health and reflection are always answered.
DEFAULT_MAX_CONCURRENT_RPCS = 64
# The --health-port process turns NOT_SERVING after this long without a heartbeat from the
# server's event loop (it beats every 0.5 s): long enough that a busy server, whose loop waits
# seconds for the GIL at worst, stays SERVING; short enough that a wedged one is restarted.
DEFAULT_HEALTH_STALE_SECONDS = 15.0


class Group(str, Enum):
    """The sections of `maxact serve --help`, in this order."""

    NETWORK = "network and security"
    STORAGE = "models, datasets and the store"
    SCANS = "scans, sessions and caches"
    RAY = "Ray"
    LIMITS = "limits"
    OBSERVABILITY = "observability"


def setting(default: Any, group: Group, description: str, **bounds: Any) -> Any:
    """A field with its `--help` text and `serve --help` section (`...` as default: required)."""
    return Field(
        default, description=description, json_schema_extra={"group": group.value}, **bounds
    )


class ServeSettings(BaseSettings):
    """Everything `maxact serve` can be told; one field per flag and MAXACT_* variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,  # MAXACT_RAY_ADDRESS= means "not set", as it always did
        extra="forbid",
        frozen=True,
    )

    # network and security
    host: str = setting("127.0.0.1", Group.NETWORK, "address to listen on")
    port: int = setting(
        DEFAULT_PORT, Group.NETWORK, "gRPC port; 0: any free port, logged at start", ge=0
    )
    auth_token_file: Path | None = setting(
        None,
        Group.NETWORK,
        "require 'authorization: Bearer <token>' (the file's content) on every RPC but health",
    )
    http: bool = setting(
        True,
        Group.NETWORK,
        "serve the HTTP/JSON API and the web UI on --http-port (--no-http: gRPC only)",
    )
    http_port: int = setting(
        DEFAULT_HTTP_PORT,
        Group.NETWORK,
        "HTTP port of the JSON API and the web UI (same --host, token and TLS as gRPC); "
        "0: any free port, logged at start",
        ge=0,
    )
    tls_cert: Path | None = setting(None, Group.NETWORK, "PEM certificate chain: serve TLS")
    tls_key: Path | None = setting(None, Group.NETWORK, "PEM private key of --tls-cert")

    # models, datasets and the store
    model_root: Path = setting(
        ...,
        Group.STORAGE,
        "folder of .onnx models (and NAME.preprocess.json sidecars); uploads land here",
    )
    data_root: Path | None = setting(
        None,
        Group.STORAGE,
        "folder whose sub-folders are the datasets scans and topk read (optional)",
    )
    store: Path | str | None = setting(
        None,
        Group.STORAGE,
        "where persisted scans are kept: an SQLite file (a path; default "
        "$XDG_STATE_HOME/maxact/store.sqlite, XDG_STATE_HOME defaulting to ~/.local/state; "
        "in-process servers: a fresh temporary store) or a PostgreSQL database shared by "
        "replicas, postgresql://USER[:PASS]@HOST:PORT/DB",
    )
    store_password: SecretStr | None = setting(
        None,
        Group.STORAGE,
        "password of a PostgreSQL --store whose URL has none (better set as the environment "
        "variable than as a flag: flags show in the process list)",
    )
    store_password_file: Path | None = setting(
        None,
        Group.STORAGE,
        "read the password of a PostgreSQL --store from this file (a container secret)",
    )
    state_dir: Path | None = setting(
        None,
        Group.STORAGE,
        "folder of per-scan files beside the store (default: the SQLite store's folder; "
        "required with PostgreSQL: a folder every replica mounts)",
    )
    store_max_mb: float | None = setting(
        None,
        Group.STORAGE,
        "largest size of an SQLite store (MiB); when full, new scans get RESOURCE_EXHAUSTED "
        "(default: as large as the disk allows)",
        gt=0,
    )

    # scans, sessions and caches
    max_running_scans: int = setting(
        1, Group.SCANS, "scans running at once on this server; more wait queued", gt=0
    )
    lease_seconds: float = setting(
        DEFAULT_LEASE_SECONDS,
        Group.SCANS,
        "a server running a scan renews its lease every fifth of this; a scan whose lease ran "
        "out (its server died) is taken over by another server sharing the store",
        ge=1,
        allow_inf_nan=False,
    )
    checkpoint_images: int = setting(
        DEFAULT_CHECKPOINT_IMAGES,
        Group.SCANS,
        "a running scan checkpoints after this many images",
        gt=0,
    )
    device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", Group.SCANS, "onnxruntime device; auto: CUDA when available, else CPU"
    )
    memory_budget_mb: int | None = setting(
        None,
        Group.SCANS,
        "memory the server should stay within (MiB); its caches (sessions, decoded images, "
        "layer outputs, patches, per-size model catalogues) share 60 percent of it, least recently "
        "used first out (default: half of the machine's or the container's memory)",
        gt=0,
    )
    memory_wait_seconds: float = setting(
        30.0,
        Group.SCANS,
        "how long a model run waits for its estimated working memory to fit the memory "
        "budget beside the runs in flight before RESOURCE_EXHAUSTED (persisted scans wait "
        "until there is room)",
        gt=0,
        allow_inf_nan=False,
    )
    session_cache_mb: int = setting(
        DEFAULT_SESSION_CACHE_MB,
        Group.SCANS,
        "cap of cached onnxruntime sessions within --memory-budget-mb, each charged by the "
        "memory it took to build (MiB; 0: keep only the session in use)",
        ge=0,
    )
    max_responses_mb: float = setting(
        DEFAULT_MAX_RESPONSES_MB,
        Group.SCANS,
        "a scan keeps each image's maximum response per channel (for histogram, labels, "
        "similar, responses) while images x channels x 4 bytes stays within this (MiB, per "
        "scan; scan create --responses on|off|auto)",
        ge=0,
        allow_inf_nan=False,
    )
    cache_dir: Path | None = setting(
        None,
        Group.SCANS,
        "keep decoded model inputs here, so repeated scans of a dataset read instead of "
        "decoding (invalidated per image when its file changes)",
    )
    cache_gb: float = setting(
        10.0,
        Group.SCANS,
        "size bound of --cache-dir (GiB, a finite number > 0); least recently used datasets "
        "go first",
        gt=0,
        allow_inf_nan=False,
    )

    # Ray
    ray_address: str | None = setting(
        None,
        Group.RAY,
        "run persisted scans on this Ray cluster ('auto' or HOST:PORT; needs the 'ray' extra;"
        " default: locally)",
    )
    ray_connect_seconds: float = setting(
        DEFAULT_RAY_CONNECT_SECONDS,
        Group.RAY,
        "give up (exit 2) when the Ray cluster does not answer within this many seconds",
        gt=0,
        allow_inf_nan=False,
    )
    ray_workers: int = setting(
        0,
        Group.RAY,
        "at most this many Ray workers per scan (0: one per GPU, else per --ray-worker-cpus "
        "cores of the cluster)",
        ge=0,
    )
    ray_worker_cpus: int = setting(
        1, Group.RAY, "CPU cores per Ray worker on nodes without GPUs", gt=0
    )
    shard_images: int = setting(
        DEFAULT_SHARD_IMAGES, Group.RAY, "images per shard of a Ray scan", gt=0
    )

    # limits
    max_upload_mb: int = setting(
        DEFAULT_MAX_UPLOAD_MB, Group.LIMITS, "largest model upload accepted (MiB)", gt=0
    )
    max_image_pixels: int = setting(
        DEFAULT_MAX_IMAGE_PIXELS,
        Group.LIMITS,
        "largest image decoded, in pixels, read from its header",
        gt=0,
    )
    max_input_pixels: int = setting(
        DEFAULT_MAX_INPUT_PIXELS,
        Group.LIMITS,
        "largest model input (and resized image before a crop), in pixels",
        gt=0,
    )
    max_request_mb: float = setting(
        DEFAULT_MAX_REQUEST_MB,
        Group.LIMITS,
        "bytes of client-streamed images one request may hold at once (MiB)",
        gt=0,
    )
    max_image_bytes: int = setting(
        DEFAULT_MAX_IMAGE_BYTES,
        Group.LIMITS,
        "largest encoded image, uploaded or read from a shard (tar member, Parquet cell), "
        "checked before it is read; larger ones are skipped (bytes)",
        gt=0,
    )
    max_classes: int = setting(
        DEFAULT_MAX_CLASSES,
        Group.LIMITS,
        "most classes (labels that have images) a scan keeps statistics for",
        gt=0,
    )
    max_class_statistics_mb: float = setting(
        DEFAULT_MAX_CLASS_STATISTICS_MB,
        Group.LIMITS,
        "memory a scan's class statistics may take, classes x channels of its layers (MiB)",
        gt=0,
    )
    max_concurrent_rpcs: int = setting(
        DEFAULT_MAX_CONCURRENT_RPCS,
        Group.LIMITS,
        "calls in flight beyond this get RESOURCE_EXHAUSTED",
        gt=0,
    )

    # observability
    metrics_port: int | None = setting(
        None, Group.OBSERVABILITY, "serve Prometheus metrics at http://HOST:PORT/metrics", ge=0
    )
    otel_endpoint: str | None = setting(
        None,
        Group.OBSERVABILITY,
        "send a trace span per gRPC call and HTTP request to this OTLP/HTTP collector, e.g. "
        "http://127.0.0.1:4318 (needs the 'otel' extra; default: no tracing)",
        max_length=2000,
    )
    health_port: int | None = setting(
        None,
        Group.OBSERVABILITY,
        "also answer grpc.health.v1 (for probes) from a small separate process on this port "
        "(same --host and TLS), which never waits behind the server's work; 0: any free port, "
        "logged at start (default: off; the container image sets 50052)",
        ge=0,
    )
    health_stale_seconds: float = setting(
        DEFAULT_HEALTH_STALE_SECONDS,
        Group.OBSERVABILITY,
        "the --health-port process answers NOT_SERVING once the server's event loop has not "
        "beaten (every 0.5 s) for this many seconds: a wedged server",
        ge=1,
        allow_inf_nan=False,
    )
    # text by default: people start `maxact serve` at a terminal; collectors (the container
    # image sets MAXACT_LOG_FORMAT=json) want one JSON object per line.
    log_format: Literal["text", "json"] = setting(
        "text",
        Group.OBSERVABILITY,
        "text for people, json for log collectors: JSON Lines",
    )

    @field_validator("store")
    @classmethod
    def _store_location(cls, value: Path | str | None) -> Path | str | None:
        """A URL stays a string (checked when the store opens); anything else is a path."""
        if isinstance(value, str) and "://" not in value:
            return Path(value)
        return value

    @classmethod
    def in_process(cls, **values: Any) -> ServeSettings:
        """Settings of a server started inside this process (tests, `maxact demo`): the same
        defaults as `maxact serve` except `IN_PROCESS_DEFAULTS`, and no MAXACT_* variable is
        read (a test must not change with the caller's environment)."""
        return _InProcessSettings(**{**IN_PROCESS_DEFAULTS, **values})

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * MIB

    @property
    def session_cache_bytes(self) -> int:
        return self.session_cache_mb * MIB

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_gb * GIB)

    @property
    def max_responses_bytes(self) -> int:
        return int(self.max_responses_mb * MIB)

    @property
    def store_max_bytes(self) -> int | None:
        return int(self.store_max_mb * MIB) if self.store_max_mb is not None else None

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * MIB)

    @property
    def max_class_statistics_bytes(self) -> int:
        return int(self.max_class_statistics_mb * MIB)

    @property
    def memory_budget_bytes(self) -> int | None:
        return self.memory_budget_mb * MIB if self.memory_budget_mb is not None else None


class _InProcessSettings(ServeSettings):
    """ServeSettings from the given values and the defaults only: no environment source."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class ProbeSettings(BaseSettings):
    """The part of ServeSettings a local health probe reads (the container's HEALTHCHECK):
    the same fields, variables and defaults, without the ones a probe does not need."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True)

    port: int = DEFAULT_PORT
    health_port: int | None = None
    tls_cert: Path | None = None


# Where an in-process server deliberately differs from `maxact serve`: free ports, so tests
# and the demo never collide with a running server. (Its store is a fresh temporary one when
# `store` is None; `maxact serve` resolves None to `default_store_path()`.)
IN_PROCESS_DEFAULTS: dict[str, Any] = {"port": 0, "http_port": 0}


def env_name(field: str) -> str:
    """`model_root` -> `MAXACT_MODEL_ROOT`: the variable pydantic-settings reads for it."""
    return ENV_PREFIX + field.upper()


def default_store_path() -> Path:
    """Where `maxact serve` keeps its scans unless --store says otherwise."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "maxact" / "store.sqlite"
