"""Several replicas over one PostgreSQL store: every replica answers for every scan, a scan
runs on one replica at a time (leases), a replica's death costs nothing but the lease time,
and a delete anywhere stops the scan where it runs."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from sqlalchemy import text as sql

from maxact.client import Client
from maxact.common.kinds import ACTIVE_STATES, ScanState
from maxact.server.app import RunningServer, start_server
from maxact.server.jobs.store import Store
from tests.onnx_models import bright_square_model
from tests.replicas.conftest import LAYER, LEASE, Shared, brute_force, hits
from tests.serve_process import serve_process

TABLES = ("scans", "checkpoints", "topk_rows", "layer_statistics", "scan_shards")


def _wait(condition, timeout: float = 60, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _owners(url: str) -> dict[str, str]:
    """scan id -> the replica whose lease it is under, for running scans."""
    with Store(url).engine.connect() as db:
        rows = db.execute(sql("SELECT id, owner FROM scans WHERE state = 'running'")).all()
    return {scan_id: owner for scan_id, owner in rows}


def _jobs(server: RunningServer):  # type: ignore[no-untyped-def]
    return server._built.jobs  # type: ignore[attr-defined]


def test_a_scan_created_on_one_replica_is_seen_running_and_answered_by_the_other(
    replicas: tuple[RunningServer, RunningServer],
) -> None:
    a, b = replicas
    with Client(a.address, timeout=60) as on_a, Client(b.address, timeout=60) as on_b:
        scan = on_a.scans.create("heavy", [LAYER], "many", k=5)
        seen = []
        for info in on_b.scans.watch(scan.id):  # B follows the store
            seen.append((info.state, info.images_done))
        assert max(s for s in seen if s[0] == "running") > ("running", 0)
        assert any(state == "running" and 0 < done < 400 for state, done in seen)
        assert seen[-1] == ("succeeded", 400)
        assert [s.id for s in on_b.scans.list()] == [scan.id]
        assert hits(on_a, scan.id) == hits(on_b, scan.id)


def test_the_same_request_id_sent_to_both_replicas_at_once_creates_one_scan(
    replicas: tuple[RunningServer, RunningServer],
) -> None:
    a, b = replicas
    with Client(a.address, timeout=60) as on_a, Client(b.address, timeout=60) as on_b:
        for attempt in range(5):
            barrier = threading.Barrier(2)
            created: dict[str, str] = {}

            def create(
                name: str,
                client: Client,
                request_id: str,
                barrier: threading.Barrier = barrier,
                created: dict[str, str] = created,
            ) -> None:
                barrier.wait()
                created[name] = client.scans.create(
                    "heavy", [LAYER], "few", k=3, request_id=request_id
                ).id

            threads = [
                threading.Thread(target=create, args=(name, c, f"same-{attempt}"))
                for name, c in (("a", on_a), ("b", on_b))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert created["a"] == created["b"]
        assert len(on_a.scans.list()) == 5


def test_four_scans_on_two_replicas_of_one_slot_each_run_two_at_a_time(shared: Shared) -> None:
    with (
        shared.replica(max_running_scans=1) as a,
        shared.replica(max_running_scans=1) as b,
        Client(a.address, timeout=60) as client,
    ):
        ids = [client.scans.create("heavy", [LAYER], "few", k=3).id for _ in range(2)]
        with Client(b.address, timeout=60) as on_b:
            ids += [on_b.scans.create("heavy", [LAYER], "few", k=3).id for _ in range(2)]
        most, pairs = 0, set()
        while not all(client.scans.get(i).finished for i in ids):
            running = _owners(shared.url)
            most = max(most, len(running))
            assert len(set(running.values())) == len(running)  # one scan per replica at most
            if len(running) == 2:
                pairs.add(tuple(sorted(running)))
            time.sleep(0.02)
        assert most == 2 and pairs, "two scans should have run at once, one per replica"
        assert {client.scans.get(i).state for i in ids} == {"succeeded"}
        assert len({str(hits(client, i)) for i in ids}) == 1  # same scan four times


def test_delete_on_one_replica_stops_the_scan_running_on_the_other(shared: Shared) -> None:
    with shared.replica() as a, Client(a.address, timeout=60) as on_a:
        scan = on_a.scans.create("heavy", [LAYER], "many", k=5)
        for info in on_a.scans.watch(scan.id):
            if info.images_done > 0:
                break
        assert scan.id in _jobs(a)._running  # it runs on A
        with shared.replica() as b, Client(b.address, timeout=60) as on_b:
            on_b.delete_scan(scan.id)
            started = time.monotonic()
            _wait(lambda: scan.id not in _jobs(a)._running, 10, "A to stop the deleted scan")
            stopped = time.monotonic() - started
            assert stopped < LEASE  # noticed at its next lease renewal, not after the lease
            counts = Store(shared.url).row_counts(scan.id)
            time.sleep(1)  # a worker that outlived the delete would write a checkpoint now
            assert counts == Store(shared.url).row_counts(scan.id) == dict.fromkeys(TABLES, 0)
            assert on_a.scans.list() == on_b.scans.list() == []


def test_a_model_uploaded_through_one_replica_is_served_by_the_other(
    replicas: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    a, b = replicas
    path = tmp_path / "square.onnx"
    onnx.save(bright_square_model(32), str(path))
    with Client(a.address, timeout=60) as on_a, Client(b.address, timeout=60) as on_b:
        on_a.upload_model(path, "square")
        assert "square" in [m.name for m in on_b.list_models()]
        scan = on_b.scans.create("square", ["conv1"], "few", k=2)
        assert [i.state for i in on_a.scans.watch(scan.id)][-1] == "succeeded"


@pytest.mark.slow
def test_a_replica_killed_mid_scan_is_taken_over_after_its_lease_and_the_result_is_exact(
    shared: Shared, tmp_path: Path
) -> None:
    with serve_process(*shared.flags()) as (process, address):
        with Client(address, timeout=60) as on_a:
            scan = on_a.scans.create("heavy", [LAYER], "many", k=5)
            for info in on_a.scans.watch(scan.id):
                if info.images_done >= 64:
                    break
        owner = _owners(shared.url)[scan.id]
        with shared.replica() as b, Client(b.address, timeout=60) as on_b:
            assert _owners(shared.url)[scan.id] == owner  # B waits while A renews
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            killed = time.monotonic()
            _wait(lambda: _owners(shared.url).get(scan.id, owner) != owner, 30, "a take-over")
            took_over = time.monotonic() - killed
            assert [i.state for i in on_b.scans.watch(scan.id)][-1] == "succeeded"
            final = on_b.scans.get(scan.id)
            assert (final.images_done, final.images_failed) == (400, 0)
            resumed = hits(on_b, scan.id, k=5)
    assert LEASE * 0.5 < took_over < LEASE + 5, took_over  # after the lease, not before
    with (
        start_server(shared.models, shared.data, device="cpu", store=tmp_path / "x.sqlite") as one,
        Client(one.address, timeout=60) as alone,
    ):
        again = alone.scans.create("heavy", [LAYER], "many", k=5)
        assert [i.state for i in alone.scans.watch(again.id)][-1] == "succeeded"
        assert resumed == hits(alone, again.id, k=5)
    expected = brute_force(shared.data / "many", (0, 5, 17), 5)
    for found, wanted in zip(resumed, expected, strict=True):
        assert [image for image, _, _ in found] == [image for image, _ in wanted]
        np.testing.assert_allclose([s for _, s, _ in found], [s for _, s in wanted], rtol=1e-5)


def test_watch_on_a_replica_that_does_not_run_the_scan_wakes_on_notify(
    shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL NOTIFY wakes the watcher: each write arrives long before the fallback
    re-read (set to 30 s here, so polling alone would miss the bound)."""
    from maxact.common.kinds import TopKMode
    from maxact.server.jobs import changes
    from maxact.server.jobs.store import NewScan

    monkeypatch.setattr(changes, "FALLBACK_SECONDS", 30.0)
    store = Store(shared.url)
    store.create_scan("elsewhere", NewScan("heavy", (LAYER,), "few", 3, TopKMode.IMAGE, {}), [])
    (lease,) = store.claim("a-replica-elsewhere", 600, 1)  # running on no replica of this test
    seen: list[tuple[float, int]] = []
    with shared.replica() as b, Client(b.address, timeout=60) as on_b:
        watcher = threading.Thread(
            target=lambda: seen.extend(
                (time.monotonic(), info.images_done) for info in on_b.scans.watch("elsewhere")
            ),
            daemon=True,
        )
        watcher.start()
        _wait(lambda: len(seen) == 1, 30, "the first answer")
        written = []
        for done in (1, 2, 3):
            time.sleep(0.3)
            written.append(time.monotonic())
            store.set_progress("elsewhere", done, 0, lease)
            _wait(lambda done=done: seen[-1][1] == done, 10, f"update {done}")
        store.transition("elsewhere", ScanState.CANCELLED, ACTIVE_STATES, lease=lease)
        watcher.join(10)
    delays = [arrived - sent for sent, (arrived, _) in zip(written, seen[1:4], strict=True)]
    assert max(delays) < 2.0, delays


@pytest.mark.slow
def test_two_replicas_killed_in_turn_lose_nothing(shared: Shared) -> None:
    """Two `maxact serve` replicas; the one running the scan dies mid-scan, the other takes
    over and dies mid-scan too, a third finishes: the top-k equals brute force."""
    with (
        serve_process(*shared.flags()) as (one, address),
        serve_process(*shared.flags()) as (two, _),
        Client(address) as client,
    ):
        by_pid = {one.pid: one, two.pid: two}
        scan = client.scans.create("heavy", [LAYER], "many", k=5)
        owners = []
        for _ in (1, 2):
            _wait(lambda: scan.id in _owners(shared.url), 60, "a replica running the scan")
            owners.append(_owners(shared.url)[scan.id])
            done = Store(shared.url).get(scan.id).images_done  # type: ignore[union-attr]
            _wait(
                lambda done=done: Store(shared.url).get(scan.id).images_done > done + 32,  # type: ignore[union-attr]
                60,
                "progress",
            )
            if len(owners) == 2:
                break
            victim = by_pid.pop(int(owners[0].split("/")[1]))
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            _wait(lambda: _owners(shared.url).get(scan.id) not in (owners[0], None), 60, "B")
        (survivor,) = by_pid.values()
        with shared.replica() as third, Client(third.address, timeout=60) as on_c:
            survivor.send_signal(signal.SIGKILL)
            survivor.wait(10)
            assert [i.state for i in on_c.scans.watch(scan.id)][-1] == "succeeded"
            final = on_c.scans.get(scan.id)
            found = hits(on_c, scan.id, k=5)
    assert len(set(owners)) == 2
    assert (final.images_done, final.images_failed) == (400, 0)
    expected = brute_force(shared.data / "many", (0, 5, 17), 5)
    for got, wanted in zip(found, expected, strict=True):
        assert [image for image, _, _ in got] == [image for image, _ in wanted]
        np.testing.assert_allclose([s for _, s, _ in got], [s for _, s in wanted], rtol=1e-5)
