"""A layer's stored statistics are read into one typed record: the class answer and
GetLayerStatistics both read it, a document stored by an older server (no clipped class
means) gets SCAN_STATISTICS_OUTDATED from the class answer while its statistics still
answer, and a threshold outside 0..1 is refused before anything is read."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from sqlalchemy import text as sql

from maxact.client import Client
from maxact.server.jobs.store import Store
from tests.datasets import write_images
from tests.errors import raised


def _finished_scan(client: Client, data_root: Path) -> str:
    """A finished scan of `net` over a labelled dataset `pairs` (classes a, b, 3 images each)."""
    write_images(data_root / "pairs", 6, 32, seed=2, classes=("a", "b"))
    scan = client.scans.create("net", ["conv1"], "pairs", k=2)
    assert [info.state for info in client.scans.watch(scan.id)][-1] == "succeeded"
    return scan.id


def _drop_keys(store_location: Path | str, scan_id: str, *keys: str) -> None:
    """Rewrite a stored statistics document without `keys` (as an older maxact stored it)."""
    where = "WHERE scan_id = :scan AND layer = 'conv1'"
    with Store(store_location).engine.begin() as db:
        text = db.execute(
            sql(f"SELECT statistics FROM layer_statistics {where}"), {"scan": scan_id}
        ).scalar_one()
        document = json.loads(text)
        assert set(keys) <= set(document)
        for key in keys:
            del document[key]
        db.execute(
            sql(f"UPDATE layer_statistics SET statistics = :doc {where}"),
            {"doc": json.dumps(document), "scan": scan_id},
        )


def test_statistics_stored_without_clipped_class_means_are_outdated_for_the_class_answer(
    served: Client, store_location: Path | str, data_root: Path
) -> None:
    scan_id = _finished_scan(served, data_root)
    answer = served.analysis.classes(scan_id, "conv1")
    assert [c.name for c in answer.classes] == ["a", "b"]
    assert sum(c.images for c in answer.classes) == answer.images_scanned == 6

    _drop_keys(store_location, scan_id, "class_mean_clipped", "class_images")
    error = raised(lambda: served.analysis.classes(scan_id, "conv1"))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "SCAN_STATISTICS_OUTDATED",
    )
    assert scan_id in error.message
    statistics = served.scans.statistics(scan_id, "conv1")
    assert statistics.images_scanned == 6 and len(statistics.channels) == 2
    assert {c.preferred_class for c in statistics.channels} <= {"a", "b"}


def test_a_selectivity_threshold_outside_zero_one_is_refused(
    served: Client, data_root: Path
) -> None:
    scan_id = _finished_scan(served, data_root)
    error = raised(lambda: served.analysis.classes(scan_id, "conv1", selective=1.5))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_THRESHOLD")
    assert "1.5" in error.message


def test_a_stored_document_with_selectivity_but_no_class_means_is_damaged(
    served: Client, store_location: Path | str, data_root: Path
) -> None:
    scan_id = _finished_scan(served, data_root)
    _drop_keys(store_location, scan_id, "class_mean")
    for ask in (
        lambda: served.scans.statistics(scan_id, "conv1"),
        lambda: served.analysis.classes(scan_id, "conv1"),
    ):
        error = raised(ask)
        assert (error.code, error.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "STATISTICS_DAMAGED",
        )
        assert scan_id in error.message and "conv1" in error.message
