"""Persisted scans on a Ray cluster (`maxact serve --ray-address auto|ADDR`).

Why Ray Core actors and not Ray Data: a scan's unit of work is a shard whose result is a small
reducer state (k x channels arrays), not a stream of rows. Actors let each worker load the
model and build its pruned onnxruntime session once and reuse it for every shard; the server
sees each shard finish individually, so it can merge it, record it in the store (a restart
re-runs only unfinished shards), report progress and retry exactly the shard a lost worker
held. Cancelling is killing the actors. Ray Data would bring its own image decoding (a
different decode/resize path, so answers would drift from the local scan's), a row-oriented
pipeline whose per-shard completion is not observable, and pyarrow/pandas on every node.
Workers run the same scan engine the local path runs (`shard_work.scan_task`).

Sizing: one worker per GPU when the cluster has GPUs (and the server's device is not cpu),
else one per `cpus_per_worker` CPU cores of the cluster, capped by `max_workers`. Workers
read models and datasets from the same paths as the server: a path every node sees.

Starting a worker (a process importing onnxruntime, then loading the model) costs seconds, so
workers outlive a scan: idle ones are kept for `idle_seconds` and reused by the next scan (a
model they loaded stays loaded), then killed so the cluster's cores go back to other users.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maxact.common.version import maxact_version
from maxact.server.jobs.ray_worker import ShardWorker, WorkerVersionMismatch
from maxact.server.jobs.shard_work import ShardEvents, ShardResult, ShardTask, ShardWork
from maxact.server.scan.engine import EngineCancelled

log = logging.getLogger("maxact.server")

RAY_EXTRA = "ray"
MAX_SHARD_ATTEMPTS = 3  # a shard whose worker was lost this often fails the scan
WAIT_SECONDS = 0.2  # how often the dispatch loop looks at the cancel flag
WORKER_START_SECONDS = 120.0  # replacements for lost workers must start within this
DEFAULT_IDLE_SECONDS = 60.0
PROBE_SECONDS = 10.0  # an idle worker that does not answer within this is replaced


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError(f"--ray-address needs Ray: pip install 'maxact[{RAY_EXTRA}]'") from None
    return ray


@dataclass(frozen=True)
class WorkerPlan:
    count: int
    options: dict[str, Any]  # ray actor options (num_cpus / num_gpus)
    device: str
    threads: int


class RayCluster:
    """The server's connection to a Ray cluster, opened at start and closed at shutdown."""

    def __init__(
        self,
        address: str,
        model_root: Path,
        data_root: Path | None,
        device: str = "auto",
        max_workers: int = 0,
        cpus_per_worker: int = 1,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        version: str | None = None,
    ) -> None:
        self.ray = import_ray()
        # workers of another maxact version refuse their shards (ShardWorker)
        self.version = version if version is not None else maxact_version()
        self.idle_seconds = idle_seconds
        self._idle: list[tuple[float, Any]] = []  # (idle since, actor)
        self._lock = threading.Lock()
        self._reaper: threading.Timer | None = None
        self.model_root = Path(model_root).resolve()
        self.data_root = Path(data_root).resolve() if data_root is not None else None
        self.device = device
        self.max_workers = max_workers
        self.cpus_per_worker = cpus_per_worker
        self.ray.init(
            address=address,
            namespace="maxact",
            log_to_driver=False,
            ignore_reinit_error=True,
            configure_logging=False,
        )
        resources = self.ray.cluster_resources()
        log.info(
            "Ray cluster at %s: %s CPU, %s GPU",
            address,
            resources.get("CPU", 0),
            resources.get("GPU", 0),
        )

    def plan(self) -> WorkerPlan:
        """Workers for the cluster as it is now (nodes may have come or gone)."""
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus > 0 and self.device != "cpu":
            count, options = gpus, {"num_gpus": 1, "num_cpus": 1}
            device, threads = "cuda", 0
        else:
            cpus = int(resources.get("CPU", 1))
            count = max(1, cpus // self.cpus_per_worker)
            options = {"num_cpus": self.cpus_per_worker}
            device, threads = "cpu", self.cpus_per_worker
        if self.max_workers > 0:
            count = min(count, self.max_workers)
        return WorkerPlan(count, options, device, threads)

    def executor(self) -> RayShardExecutor:
        return RayShardExecutor(self)

    def acquire(self, count: int) -> list[Any]:
        """Up to `count` workers (as many as the cluster plan allows): idle ones first."""
        plan = self.plan()
        count = min(count, plan.count)
        with self._lock:
            self._idle.sort(key=lambda pair: pair[0])
            taken = [actor for _, actor in self._idle[-count:]] if count else []
            self._idle = self._idle[: len(self._idle) - len(taken)]
        taken = self._alive(taken)
        remote = self.ray.remote(max_restarts=0, max_task_retries=0)(ShardWorker)
        data_root = str(self.data_root or "")
        fresh = [
            remote.options(**plan.options).remote(
                str(self.model_root), data_root, plan.device, plan.threads, self.version
            )
            for _ in range(count - len(taken))
        ]
        return taken + fresh

    def _alive(self, actors: list[Any]) -> list[Any]:
        """The idle workers that still answer (a node may have gone while they waited)."""
        if not actors:
            return []
        probes = [actor.ready.remote() for actor in actors]
        ready, _ = self.ray.wait(probes, num_returns=len(probes), timeout=PROBE_SECONDS)
        alive: list[Any] = []
        dead: list[Any] = []
        for actor, probe in zip(actors, probes, strict=True):
            try:
                answered = probe in ready and self.ray.get(probe)
            except Exception:
                answered = False
            (alive if answered else dead).append(actor)
        self.kill(dead)
        return alive

    def release(self, actors: list[Any]) -> None:
        """Keep healthy workers for the next scan; killed after `idle_seconds` unused."""
        now = time.monotonic()
        with self._lock:
            self._idle.extend((now, actor) for actor in actors)
            if self._reaper is None:
                self._reaper = threading.Timer(self.idle_seconds, self._reap)
                self._reaper.daemon = True
                self._reaper.start()

    def _reap(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._reaper = None
            expired = [actor for since, actor in self._idle if now - since >= self.idle_seconds]
            self._idle = [pair for pair in self._idle if now - pair[0] < self.idle_seconds]
            if self._idle:
                self._reaper = threading.Timer(self.idle_seconds, self._reap)
                self._reaper.daemon = True
                self._reaper.start()
        self.kill(expired)

    def kill(self, actors: list[Any]) -> None:
        for actor in actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already dead with its node
                log.debug("Ray worker already gone", exc_info=True)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = [actor for _, actor in self._idle], []
            if self._reaper is not None:
                self._reaper.cancel()
        self.kill(idle)
        self.ray.shutdown()


class RayShardExecutor:
    """One scan's shards over a pool of actors; lost workers' shards go to the others."""

    def __init__(self, cluster: RayCluster) -> None:
        self.cluster = cluster
        self.ray = cluster.ray
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._actors: list[Any] = []

    def _start_workers(self, count: int) -> list[Any]:
        actors = self.cluster.acquire(count)
        with self._lock:
            self._actors.extend(actors)
        return actors

    def run(
        self,
        work: ShardWork,
        tasks: Sequence[ShardTask],
        events: ShardEvents,
        cancel: threading.Event,
    ) -> None:
        ray = self.ray
        lost_errors = (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.ObjectLostError,
            ray.exceptions.NodeDiedError,
        )
        work_data = work.to_dict()
        queue = deque(tasks)
        attempts: dict[int, int] = {}
        idle = self._start_workers(len(tasks))
        running: dict[Any, tuple[Any, ShardTask]] = {}
        try:
            while queue or running:
                if cancel.is_set() or self._stop.is_set():
                    raise EngineCancelled()
                while idle and queue:
                    actor, task = idle.pop(), queue.popleft()
                    events.started(task.shard)
                    running[actor.scan.remote(work_data, task.to_dict())] = (actor, task)
                if not running:  # every worker was lost: start new ones where nodes remain
                    idle = self._replacements(len(queue))
                    continue
                ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_SECONDS)
                for ref in ready:
                    actor, task = running.pop(ref)
                    try:
                        data = ray.get(ref)
                    except lost_errors as exc:
                        if cancel.is_set() or self._stop.is_set():
                            raise EngineCancelled() from None
                        _count_loss(attempts, task.shard, work.scan_id, exc)
                        queue.appendleft(task)
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.cause if isinstance(exc.cause, Exception) else exc
                        if isinstance(cause, WorkerVersionMismatch):
                            log.error("scan %s: %s", work.scan_id, cause)
                        raise cause from None
                    if cancel.is_set() or self._stop.is_set():
                        raise EngineCancelled()
                    events.finished(ShardResult.from_dict(data))
                    idle.append(actor)
        except BaseException:
            self._kill_all()
            raise
        # healthy workers serve the next scan; lost ones are gone with their nodes
        with self._lock:
            self._actors = []
        self.cluster.release(idle)

    def _replacements(self, wanted: int) -> list[Any]:
        """New workers after all were lost; they must start within WORKER_START_SECONDS."""
        actors = self._start_workers(max(1, wanted))
        probes = [actor.ready.remote() for actor in actors]
        ready, _ = self.ray.wait(probes, num_returns=len(probes), timeout=WORKER_START_SECONDS)
        alive = [actor for actor, probe in zip(actors, probes, strict=True) if probe in ready]
        if not alive:
            raise RuntimeError("every Ray worker was lost and none could be started again")
        return alive

    def stop(self) -> None:
        """Cancel: kill the workers now (their shards stay unfinished in the store)."""
        self._stop.set()
        self._kill_all()

    def _kill_all(self) -> None:
        with self._lock:
            actors, self._actors = self._actors, []
        self.cluster.kill(actors)


def _count_loss(attempts: dict[int, int], shard: int, scan_id: str, exc: BaseException) -> None:
    """A shard lost with its worker goes to another one, at most MAX_SHARD_ATTEMPTS times."""
    attempts[shard] = attempts.get(shard, 0) + 1
    if attempts[shard] >= MAX_SHARD_ATTEMPTS:
        raise RuntimeError(
            f"shard {shard} was lost with its Ray worker {attempts[shard]} times: "
            f"{type(exc).__name__}"
        ) from None
    log.warning(
        "scan %s: Ray worker lost (%s); shard %d goes to another worker",
        scan_id,
        type(exc).__name__,
        shard,
    )
