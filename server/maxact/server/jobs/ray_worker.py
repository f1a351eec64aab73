"""The shard worker that runs inside a Ray actor: it loads the model once and scans shards.

Plain Python (no Ray import): the executor turns it into an actor with `ray.remote`, so the
server and the scan engine import nothing of Ray when scans run locally. Arguments and results
are plain data (dicts, lists, numpy arrays): nothing of maxact is pickled across the cluster.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maxact.common.version import maxact_version
from maxact.server.data.datasets import DatasetCatalog
from maxact.server.jobs.shard_work import ShardTask, ShardWork, scan_shard
from maxact.server.models.registry import ModelRegistry
from maxact.server.models.runtime import INTRA_OP_THREADS_ENV


class WorkerVersionMismatch(RuntimeError):
    """A worker whose maxact differs from the server's: its reducer states may not merge."""


def version_mismatch(node: str, worker: str, server: str) -> str | None:
    """The one line that refuses a worker of another version, or None when they agree."""
    if worker == server:
        return None
    return (
        f"Ray worker on node {node} runs maxact {worker} but this server runs {server}:"
        f" install maxact {server} on every Ray node"
    )


class ShardWorker:
    """One per GPU or per `threads` CPU cores of the cluster; lives for one scan.

    `server_version` is the server's maxact version: a worker of another version refuses every
    shard (the server then fails the scan with that line) instead of returning states that
    another version's reducers may not merge exactly.
    """

    def __init__(
        self, model_root: str, data_root: str, device: str, threads: int, server_version: str
    ) -> None:
        self.refusal = version_mismatch(_node(), maxact_version(), server_version)
        if threads > 0:  # onnxruntime uses this worker's share of the cores, not all of them
            os.environ[INTRA_OP_THREADS_ENV] = str(threads)
        self.models = ModelRegistry(Path(model_root), device)
        self.datasets = DatasetCatalog(Path(data_root) if data_root else None)

    def ready(self) -> bool:
        """Answers once the actor has started (its process exists and imported maxact)."""
        return True

    def scan(self, work: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
        """Scan one shard; the model is loaded by the first call and kept."""
        if self.refusal is not None:
            raise WorkerVersionMismatch(self.refusal)
        result = scan_shard(self.models, self.datasets, ShardWork(**work), ShardTask(**task))
        return result.to_dict()


def _node() -> str:
    """This worker's node, as Ray names it (its IP address), else the host name."""
    try:
        import ray

        node_ip: Callable[[], str] = ray.util.get_node_ip_address  # unannotated in Ray
        return node_ip()
    except Exception:  # outside Ray (a local test of the class itself)
        import socket

        return socket.gethostname()
