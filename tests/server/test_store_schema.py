"""Stored scan state is data: npz checkpoints, versioned schema, pickles never loaded."""

from __future__ import annotations

import pickle
import sqlite3

import numpy as np
import pytest

from maxact.server.jobs.store import SCHEMA_VERSION, Store, StoreVersionError
from maxact.server.scan.layer import LayerReducer, ReduceOptions
from maxact.server.scan.reducers import RunningTopK


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


def test_an_unversioned_store_is_migrated_and_its_pickled_checkpoints_dropped(tmp_path):
    path = tmp_path / "old.sqlite"
    Store(path)  # the current schema, then pretend it was written before versioning
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 0")
    db.execute(
        "INSERT INTO scans (id, seq, model, layers, dataset, k, mode, preprocessing, state,"
        " images_done, images_total, create_time, update_time, image_ids, checkpoint_position,"
        " checkpoint_done) VALUES ('s1', 1, 'm', '[\"l\"]', 'd', 3, 'image', '{}', 'running',"
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


def test_a_store_from_a_newer_maxact_is_refused_naming_its_version(tmp_path):
    path = tmp_path / "new.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(path)
