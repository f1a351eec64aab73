"""A damaged or full store costs at most the scans it concerns (reproductions 2 and 4, and the
crash loop of 1): rows that do not parse fail their scan and the rest start, unknown states list,
stored image ids are re-checked (an unsafe one is skipped, never opened), a scan that crashed
the server twice is not resumed again, a full store ends every scan `failed` with the reason and
refuses new ones with RESOURCE_EXHAUSTED while reads go on, and a file that is not a store is
one clear line."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text as sql

from maxact.client import Client
from maxact.common.kinds import TopKMode
from maxact.server.app import start_server
from maxact.server.jobs.store import SCHEMA_VERSION, NewScan, Store, StoreError
from tests.datasets import slow_scan, write_images
from tests.onnx_models import heavy_cnn, save
from tests.security.robust_helpers import refused
from tests.serve_process import serve_process


def _world(tmp_path: Path, images: int = 3) -> tuple[Path, Path]:
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    save(heavy_cnn(32, depth=2), model_root, "heavy")
    write_images(data_root / "ds", images, 32, seed=1)
    return model_root, data_root


def _queued_scan(store: Store, ids: list[str], scan_id: str) -> None:
    store.create_scan(scan_id, NewScan("heavy", ("relu1",), "ds", 3, TopKMode.IMAGE, {}), ids)


def _wait_finished(client: Client, scan_id: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while True:
        scan = client.scans.get(scan_id)
        if scan.finished:
            return scan
        assert time.monotonic() < deadline, f"scan {scan_id} never finished: {scan}"
        time.sleep(0.05)


def _edit(store: Store, statement: str, **values: object) -> None:
    with store.engine.begin() as db:
        db.execute(sql(statement), values)


def test_damaged_rows_fail_their_scan_and_the_others_start(
    tmp_path: Path, store_location: Path | str
) -> None:
    model_root, data_root = _world(tmp_path)
    path = store_location
    store = Store(path)
    ids = sorted(p.name for p in (data_root / "ds").iterdir())
    for scan_id in ("badjson", "weird", "escape", "good", "looping"):
        _queued_scan(store, ids, scan_id)
    _edit(store, "UPDATE scans SET layers = '{\"relu1\": ' WHERE id = 'badjson'")
    _edit(store, "UPDATE scans SET state = 'exploded' WHERE id = 'weird'")
    _edit(
        store, "UPDATE scans SET image_ids = :ids WHERE id = 'escape'", ids='["../../etc/passwd"]'
    )
    _edit(store, "UPDATE scans SET resume_attempts = 2, state = 'running' WHERE id = 'looping'")

    with (
        start_server(
            model_root, data_root, device="cpu", store=path, state_dir=tmp_path / "state"
        ) as running,
        Client(running.address, timeout=60) as client,
    ):
        assert _wait_finished(client, "good").state == "succeeded"
        bad = _wait_finished(client, "badjson")
        assert bad.state == "failed" and "damaged store row" in bad.error and "layers" in bad.error
        # a stored id is checked where it is read, like an id on disk: skipped, never opened
        escape = _wait_finished(client, "escape")
        assert (escape.state, escape.images_done, escape.images_failed) == ("succeeded", 0, 1)
        looping = _wait_finished(client, "looping")
        assert looping.state == "failed" and "stopped abnormally 2 times" in looping.error
        listed = {scan.id: scan for scan in client.scans.list()}  # was INTERNAL
        assert listed["weird"].state == "failed" and "exploded" in listed["weird"].error
        assert client.scans.get("weird").state == "failed"
    # counted before it ran (tests/security/test_checkpoint_bomb.py sees the count of a run
    # that failed), cleared by the checkpoint of its finished shard
    good = Store(path).get("good")
    assert good is not None and good.resume_attempts == 0
    assert [row.done for row in Store(path).shards("good")] == [True]


@pytest.mark.parametrize("content", [b"\x00" * 8192, b"this is not a database" * 100])
def test_a_file_that_is_not_a_store_is_one_line_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "store.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "--store" in message


def test_an_sqlite_file_of_another_program_is_not_taken_for_a_store(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match="not a maxact store"):
        Store.open(path)


def _full_server(tmp_path: Path, model_root: Path, data_root: Path, extra_pages: int) -> tuple:
    """A server whose store may grow only `extra_pages` pages beyond its empty schema."""
    path = tmp_path / "store.sqlite"
    with sqlite3.connect(Store(path).path) as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    store_max_mb = (pages + extra_pages) * page_size / 2**20  # page sizes are exact in MiB
    running = start_server(
        model_root, data_root, device="cpu", store=path, store_max_mb=store_max_mb
    )
    return running, path


def test_a_full_store_fails_every_scan_with_the_reason_and_keeps_serving_reads(
    tmp_path: Path,
) -> None:
    model_root, data_root = _world(tmp_path)
    write_images(data_root / "many", 300, 8, seed=None)
    running, path = _full_server(tmp_path, model_root, data_root, extra_pages=0)
    with running, Client(running.address, timeout=60) as client:
        first = client.scans.create("heavy", ["relu0", "relu1"], "ds", k=9)
        second = client.scans.create("heavy", ["relu0", "relu1"], "ds", k=9)
        for scan in (first, second):  # the results do not fit: each ends failed, with why
            finished = _wait_finished(client, scan.id)
            assert finished.state == "failed" and "store is full" in finished.error
        error = refused(
            lambda: client.scans.create("heavy", ["relu1"], "many", k=3),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "STORE_FULL",
        )  # was INTERNAL
        assert "full" in error.message
        assert {s.id for s in client.scans.list()} == {first.id, second.id}
        assert [m.name for m in client.list_models()] == ["heavy"]

    restarted = start_server(  # a restart on the full store starts (was a traceback)
        model_root, data_root, device="cpu", store=path, store_max_mb=2**-20
    )
    with restarted, Client(restarted.address, timeout=60) as client:
        assert {s.state for s in client.scans.list()} == {"failed"}


def test_a_version_2_store_gains_resume_attempts_and_keeps_its_scans(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    with sqlite3.connect(path) as db:  # the version 2 scans table, without resume_attempts
        db.execute(
            "CREATE TABLE scans (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, model TEXT NOT NULL,"
            " layers TEXT NOT NULL, dataset TEXT NOT NULL, k INTEGER NOT NULL, mode TEXT NOT NULL,"
            " preprocessing TEXT NOT NULL, state TEXT NOT NULL,"
            " images_done INTEGER NOT NULL DEFAULT 0, images_failed INTEGER NOT NULL DEFAULT 0,"
            " images_total INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',"
            " create_time REAL NOT NULL, update_time REAL NOT NULL, image_ids TEXT NOT NULL,"
            " checkpoint_position INTEGER NOT NULL DEFAULT 0,"
            " checkpoint_done INTEGER NOT NULL DEFAULT 0,"
            " checkpoint_failed INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute(
            "INSERT INTO scans (id, seq, model, layers, dataset, k, mode, preprocessing, state,"
            " create_time, update_time, image_ids) VALUES ('s1', 1, 'm', '[\"l\"]', 'd', 3,"
            " 'image', '{}', 'queued', 0, 0, '[]')"
        )
        db.execute("PRAGMA user_version = 2")
    record = Store(path).get("s1")
    assert record is not None and record.resume_attempts == 0 and record.layers == ("l",)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


@pytest.mark.slow
def test_a_scan_whose_runs_die_with_the_server_twice_is_failed_not_resumed(
    tmp_path: Path,
) -> None:
    """The crash loop of reproduction 1 with real deaths: SIGKILL twice while the scan runs
    (before any checkpoint); the third start fails it with the reason instead of running it."""
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    slow_scan(model_root, data_root, 200)
    flags = ["--model-root", str(model_root), "--data-root", str(data_root)]
    flags += ["--store", str(tmp_path / "store.sqlite"), "--checkpoint-images", "100000"]
    scan_id = ""
    for death in (1, 2):
        with serve_process(*flags) as (process, address), Client(address, timeout=60) as client:
            if death == 1:
                scan_id = client.scans.create("heavy", ["relu5"], "many", k=3).id
            deadline = time.monotonic() + 60
            while client.scans.get(scan_id).state != "running":
                assert time.monotonic() < deadline, "the scan never ran"
                time.sleep(0.05)
            process.kill()
            process.wait()
    with serve_process(*flags) as (process, address), Client(address, timeout=60) as client:
        scan = client.scans.get(scan_id)
        assert scan.state == "failed" and "stopped abnormally 2 times" in scan.error
        assert [m.name for m in client.list_models()] == ["heavy"]
