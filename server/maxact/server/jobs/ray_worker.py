"""The shard worker that runs inside a Ray actor: it loads the model once and scans shards.

Plain Python (no Ray import): the executor turns it into an actor with `ray.remote`, so the
server and the scan engine import nothing of Ray when scans run locally. Arguments and results
are plain data (dicts, lists, numpy arrays): nothing of maxact is pickled across the cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from maxact.server.data.datasets import DatasetCatalog
from maxact.server.jobs.shard_work import ShardTask, ShardWork, scan_shard
from maxact.server.models.registry import ModelRegistry
from maxact.server.models.runtime import INTRA_OP_THREADS_ENV


class ShardWorker:
    """One per GPU or per `threads` CPU cores of the cluster; lives for one scan."""

    def __init__(self, model_root: str, data_root: str, device: str, threads: int) -> None:
        if threads > 0:  # onnxruntime uses this worker's share of the cores, not all of them
            os.environ[INTRA_OP_THREADS_ENV] = str(threads)
        self.models = ModelRegistry(Path(model_root), device)
        self.datasets = DatasetCatalog(Path(data_root) if data_root else None)

    def ready(self) -> bool:
        """Answers once the actor has started (its process exists and imported maxact)."""
        return True

    def scan(self, work: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
        """Scan one shard; the model is loaded by the first call and kept."""
        result = scan_shard(self.models, self.datasets, ShardWork(**work), ShardTask(**task))
        return result.to_dict()
