"""Stored scan state is data: npz checkpoints, versioned schema (Alembic revisions, migrated on
start from every older store), pickles never loaded."""

from __future__ import annotations

import pickle
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text as sql

from maxact.client import Client
from maxact.server.app import start_server
from maxact.server.jobs.store import SCHEMA_VERSION, ScanError, Store, StoreVersionError
from maxact.server.scan.layer import LayerReducer, ReduceOptions
from maxact.server.scan.reducers import RunningTopK
from tests.datasets import write_images
from tests.onnx_models import bright_square_model, save

V5_STORE = Path(__file__).parent / "stores" / "v5.sqlite"


def _reducer(options: ReduceOptions) -> LayerReducer:
    """A flat layer of 4 channels (no field needed) with two classes."""
    return LayerReducer("flat", None, (1, 4), options, classes=("a", "b"))


def test_layer_reducer_state_round_trips_through_npz_bytes_equal():
    rng = np.random.default_rng(0)
    options = ReduceOptions(k=3, bottom=True)
    reducer = _reducer(options)
    responses = rng.normal(size=(10, 4)).astype(np.float32)
    reducer.update(responses, np.arange(10), labels=rng.integers(0, 2, 10))
    restored = _reducer(options)
    restored.load_state(reducer.state())
    for kind in reducer.kinds():
        for c in range(4):
            assert restored.entries(c, kind) == reducer.entries(c, kind)
    assert np.array_equal(restored.stats.sums.values(), reducer.stats.sums.values())
    assert np.array_equal(restored.stats.class_sums.values(), reducer.stats.class_sums.values())


def test_a_pickled_checkpoint_is_refused_not_executed():
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("a pickle in the store was executed",))

    with pytest.raises(ValueError):
        _reducer(ReduceOptions(k=3)).load_state(pickle.dumps(Boom()))


def test_running_topk_state_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        RunningTopK(4, 3).load_state_dict(RunningTopK(5, 3).state_dict())


def _v5_store(folder: Path) -> Path:
    """A copy of the store file maxact 0.2.0 wrote (schema version 5, before Alembic)."""
    path = folder / "v5.sqlite"
    shutil.copyfile(V5_STORE, path)
    return path


def test_an_unversioned_store_is_migrated_and_its_pickled_checkpoints_dropped(tmp_path):
    path = _v5_store(tmp_path)  # then pretend it was written before versioning
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 0")
    db.execute(
        "INSERT INTO scans (id, seq, model, layers, dataset, k, mode, preprocessing, state,"
        " images_done, images_total, create_time, update_time, image_ids, checkpoint_position,"
        " checkpoint_done) VALUES ('s1', 9, 'm', '[\"l\"]', 'd', 3, 'image', '{}', 'running',"
        " 5, 10, 0, 0, '[]', 5, 5)"
    )
    db.execute("INSERT INTO checkpoints VALUES ('s1', 'l', ?)", (pickle.dumps({"x": 1}),))
    db.commit()
    db.close()
    store = Store(path)
    record = store.get("s1")
    assert record is not None and record.checkpoint_position == 0 and record.images_done == 0
    assert store.checkpoint("s1") == {}
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION


def test_a_store_written_before_alembic_migrates_keeping_every_scan_and_result(tmp_path):
    path = _v5_store(tmp_path)
    before = sqlite3.connect(path)
    rows_before = before.execute("SELECT * FROM topk_rows ORDER BY 1, 2, 3, 4, 5").fetchall()
    before.close()
    store = Store(path)
    done, queued, failed = store.list_scans(10)[::-1]
    assert (done.state, done.request_id, done.images_done) == ("succeeded", "made-by-v5", 6)
    assert (queued.id, queued.state, failed.id) == ("queuedv5", "queued", "failedv5")
    assert failed.error == ScanError(9, "SOME_REASON", "it failed")
    assert store.statistics(done.id, "conv1") is not None
    with store.engine.connect() as db:
        assert db.execute(sql("SELECT version_num FROM alembic_version")).scalar() == "0006"
        rows_after = db.execute(sql("SELECT * FROM topk_rows ORDER BY 1, 2, 3, 4, 5")).all()
    assert [tuple(row) for row in rows_after] == rows_before
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    Store(path)  # opening it again changes nothing
    assert [r.id for r in Store(path).list_scans(10)] == [failed.id, queued.id, done.id]


def test_a_migrated_store_runs_its_queued_scan_to_the_result_of_a_new_one(
    tmp_path: Path, model_root: Path, data_root: Path
) -> None:
    """The scan queued by the old version runs after the migration and equals the same scan
    created now (and the one the old version finished)."""
    save(bright_square_model(32), model_root, "net")
    write_images(data_root / "small", 6, 32, seed=1)
    path = _v5_store(tmp_path)
    with (
        start_server(model_root, data_root, device="cpu", store=path) as running,
        Client(running.address, timeout=60) as client,
    ):
        old_done = next(s for s in client.scans.list() if s.request_id == "made-by-v5")
        fresh = client.scans.create("net", ["conv1"], "small", k=3)
        for scan_id in ("queuedv5", fresh.id):
            assert [i.state for i in client.scans.watch(scan_id)][-1] == "succeeded"
        answers = [
            [p.hit for p in client.scans.neuron(scan_id, "conv1", 0, k=3, patches=False)[1]]
            for scan_id in ("queuedv5", fresh.id, old_done.id)
        ]
    assert answers[0] == answers[1] == answers[2] and answers[0]


def test_a_store_from_a_newer_maxact_is_refused_naming_its_version(tmp_path):
    path = tmp_path / "new.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(path)


def test_a_database_of_a_newer_alembic_revision_is_refused_naming_it(store_location):
    Store(store_location).close()
    newer = f"{SCHEMA_VERSION + 1:04d}"
    with Store(store_location).engine.begin() as db:
        db.execute(sql("UPDATE alembic_version SET version_num = :v"), {"v": newer})
    with pytest.raises(StoreVersionError, match=f"schema version {SCHEMA_VERSION + 1}") as caught:
        Store.open(store_location)
    assert "upgrade maxact" in str(caught.value) and "\n" not in str(caught.value)
    assert "maxact-test-password" not in str(caught.value)  # a URL's password is never shown
