"""Scan leases in the store, on both back ends: a scan is claimed by one replica at a time,
taken over only once its lease ran out by the database's clock, and a replica that lost its
lease can write nothing more (fencing by the lease generation)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text as sql

from maxact.common.kinds import ACTIVE_STATES, ScanState, TopKMode
from maxact.server.data.datasets import DatasetCatalog
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.jobs.store import SCHEMA_VERSION, LeaseLost, NewScan, Store
from maxact.server.models.registry import ModelRegistry


def _scans(store: Store, count: int) -> list[str]:
    ids = [f"scan{i}" for i in range(count)]
    for scan_id in ids:
        store.create_scan(scan_id, NewScan("m", ("l",), "d", 3, TopKMode.IMAGE, {}), ["a", "b"])
    return ids


def test_concurrent_claims_never_give_one_scan_to_two_replicas(store_location) -> None:
    ids = _scans(Store(store_location), 12)
    replicas = [Store(store_location) for _ in range(4)]
    claimed: dict[str, list[str]] = {f"r{i}": [] for i in range(4)}
    barrier = threading.Barrier(4)

    def claim(index: int) -> None:
        barrier.wait()
        for _ in range(6):
            leases = replicas[index].claim(f"r{index}", 60, 1)
            claimed[f"r{index}"] += [lease.scan_id for lease in leases]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [scan_id for got in claimed.values() for scan_id in got]
    assert sorted(every) == sorted(ids)  # each claimed exactly once


def test_a_lease_is_taken_over_only_after_it_ran_out_and_the_old_owner_is_fenced(
    store_location,
) -> None:
    store = Store(store_location)
    (scan_id,) = _scans(store, 1)
    (first,) = store.claim("a", 1.0, 5)
    assert store.claim("b", 1.0, 5) == []  # alive: not B's to take
    assert store.renew([first], 1.0) == []
    time.sleep(1.3)  # A stops renewing
    (second,) = store.claim("b", 30, 5)
    assert (second.scan_id, second.generation) == (scan_id, first.generation + 1)
    assert store.renew([first], 30) == [first]  # A learns it lost the scan
    for write in (
        lambda: store.set_progress(scan_id, 1, 0, first),
        lambda: store.count_run(scan_id, first),
        lambda: store.plan_shards(scan_id, [(0, 2)], first),
        lambda: store.transition(scan_id, ScanState.RUNNING, ACTIVE_STATES, lease=first),
        lambda: store.finish_shard(scan_id, 0, 2, 0, {"l": b"x"}, 2, 0, lease=first),
    ):
        with pytest.raises(LeaseLost):
            write()
    assert store.get(scan_id).images_done == 0 and store.shards(scan_id) == []  # type: ignore[union-attr]
    store.set_progress(scan_id, 1, 0, second)  # the new owner writes
    assert store.get(scan_id).images_done == 1  # type: ignore[union-attr]


def test_leases_follow_the_database_clock_not_a_skewed_replica_clock(
    store_location, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose clock runs an hour ahead still sees the other's lease as alive."""
    store = Store(store_location)
    _scans(store, 1)
    (lease,) = store.claim("a", 30, 1)
    ahead = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: ahead)
    assert Store(store_location).claim("skewed", 30, 1) == []
    assert store.renew([lease], 30) == []


def test_a_cancel_or_delete_anywhere_ends_the_lease(store_location) -> None:
    store = Store(store_location)
    kept, cancelled, deleted = _scans(store, 3)
    leases = {lease.scan_id: lease for lease in store.claim("a", 30, 3)}
    Store(store_location).transition(cancelled, ScanState.CANCELLED, ACTIVE_STATES)
    Store(store_location).delete(deleted)
    lost = store.renew(leases.values(), 30)
    assert sorted(lease.scan_id for lease in lost) == [cancelled, deleted]
    assert kept in leases


def test_the_state_dir_defaults_to_the_sqlite_store_folder(tmp_path: Path) -> None:
    store = Store(tmp_path / "here" / "store.sqlite")
    models, data = tmp_path / "models", tmp_path / "data"
    models.mkdir()
    data.mkdir()
    jobs = ScanJobs(store, ModelRegistry(models, "cpu"), DatasetCatalog(data))
    assert jobs.state_dir == tmp_path / "here"
    given = ScanJobs(
        store, ModelRegistry(models, "cpu"), DatasetCatalog(data), state_dir=tmp_path / "s"
    )
    assert given.state_dir == tmp_path / "s"


def test_replicas_starting_together_migrate_a_new_database_once(postgres) -> None:
    url = postgres.url()
    opened: list[Store] = []
    failures: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            opened.append(Store(url))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == [] and len(opened) == 4
    with opened[0].engine.connect() as db:
        assert db.execute(sql("SELECT version_num FROM alembic_version")).scalars().all() == [
            f"{SCHEMA_VERSION:04d}"
        ]
