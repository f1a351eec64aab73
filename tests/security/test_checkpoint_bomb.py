"""A checkpoint that cannot be loaded never takes the server down: a stored checkpoint whose
.npz holds a huge array deflated to a few megabytes is refused from its .npy header, before
anything is inflated. A real `maxact serve` under an address-space limit starts, stays
SERVING, fails that scan with CHECKPOINT_DAMAGED naming the array (the run counted before the
checkpoint was read), and a restart does not run it again."""

from __future__ import annotations

import io
import resource
import zipfile
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from numpy.lib import format as npy

from maxact.client import Client
from maxact.server.app import start_server
from maxact.server.jobs.store import Store
from tests.datasets import write_images
from tests.onnx_models import random_cnn, save
from tests.scan_results import finish, unfinished_copy
from tests.serve_process import serve_process

ADDRESS_SPACE = 2560 * 1024 * 1024  # as tests/security/test_memory_limit.py
HUGE = (2**27,)  # float64: 1 GiB inflated
IMAGES = 12


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _bomb(names: list[str], huge: str) -> bytes:
    """An .npz with the members `names` (small arrays), `huge` declaring HUGE float64 zeros:
    about 1 MB deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name in names:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                if name != huge:
                    npy.write_array(member, np.zeros(4))
                    continue
                header = {"descr": "<f8", "fortran_order": False, "shape": HUGE}
                npy.write_array_header_2_0(member, header)
                chunk = bytes(16 * 1024 * 1024)
                for _ in range(HUGE[0] * 8 // len(chunk)):
                    member.write(chunk)
    return buffer.getvalue()


def test_a_checkpoint_with_a_deflated_huge_array_fails_its_scan_not_the_server(
    tmp_path: Path,
) -> None:
    models, data, store_path = tmp_path / "models", tmp_path / "data", tmp_path / "s.sqlite"
    save(random_cnn(3, size=32), models, "net")
    write_images(data / "photos", IMAGES, 32, seed=4)
    with (
        start_server(models, data, device="cpu", store=store_path, checkpoint_images=4) as srv,
        Client(srv.address, timeout=120) as client,
    ):
        done = client.scans.create("net", ["relu_a"], "photos", k=3)
        finish(client, done.id)

    # an unfinished copy of that scan whose first half is "checkpointed" as the bomb
    store = Store(store_path)
    scan_id = unfinished_copy(store, done.id)
    store.plan_shards(scan_id, [(0, IMAGES)])
    names = ["top/key", "top/image", "top/y", "top/x", "bottom/key", "bottom/image"]
    names += ["bottom/y", "bottom/x", "stats/images", "stats/fired", "stats/maximum"]
    names += ["stats/sums", "stats/class_images"]
    bomb = _bomb(names, "top/key")  # the first array checked
    assert len(bomb) < 8 * 1024 * 1024
    half = IMAGES // 2
    assert store.finish_shard(scan_id, 0, half, 0, {"relu_a": bomb}, half, 0, until=half)

    flags = ["--model-root", str(models), "--data-root", str(data), "--store", str(store_path)]
    limited = serve_process(*flags, env={"MALLOC_ARENA_MAX": "2"}, preexec_fn=_limit_address_space)
    with limited as (process, address), Client(address, timeout=120) as client:
        states = [info.state for info in client.scans.watch(scan_id)]
        assert states[-1] == "failed"
        failure = client.scans.get(scan_id).failure
        assert failure is not None
        assert failure.reason == "CHECKPOINT_DAMAGED", failure
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "'top/key'" in failure.message and str(HUGE) in failure.message
        assert process.poll() is None, "the server died"
        health = health_pb2_grpc.HealthStub(client._channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        again = client.scans.create("net", ["relu_a"], "photos", k=3)  # others still scan
        finish(client, again.id)
    stored = Store(store_path).get(scan_id)
    assert stored is not None and stored.resume_attempts == 1  # counted before the load

    with serve_process(*flags) as (_, address), Client(address, timeout=120) as client:
        assert client.scans.get(scan_id).state == "failed"  # not resumed into a loop
    assert Store(store_path).get(scan_id).resume_attempts == 1  # type: ignore[union-attr]
