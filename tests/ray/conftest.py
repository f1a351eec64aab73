"""A real multi-node Ray cluster on loopback for the Ray tests: one per test module.

`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (in this process, so in the cluster's processes and in
every maxact server started from here) makes Ray use 127.0.0.1; the dashboard, usage stats
and metrics exporter are off so nothing leaves loopback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_USAGE_STATS": "1",
    "RAY_enable_metrics_collection": "0",
    "RAY_DEDUP_LOGS": "0",
}
NODE_ARGS = {"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 1024**2}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    """Head (1 CPU) + 2 worker nodes (1 CPU each); shut down after the module's tests."""
    ray_cluster_utils = pytest.importorskip("ray.cluster_utils")
    saved = {name: os.environ.get(name) for name in LOOPBACK_ENV}
    os.environ.update(LOOPBACK_ENV)
    cluster = ray_cluster_utils.Cluster(initialize_head=True, head_node_args=dict(NODE_ARGS))
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=80 * 1024**2)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
