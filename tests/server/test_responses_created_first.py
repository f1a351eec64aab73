"""A scan's responses manifest exists before its store row commits: on PostgreSQL another
replica may claim a new scan at once, and a run that found no manifest would keep no matrix.
Retries and refused requests leave no manifest of a scan that does not exist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maxact.client import Client, MaxactError
from maxact.server.app import start_server
from tests.responses_world import write_world


def _watch_commits(jobs: Any, seen: list[bool]) -> None:
    """Record, inside each create transaction, whether the scan's manifest is already there."""
    create = jobs.store.create_scan

    def watching(
        scan_id: str,
        scan: Any,
        image_ids: list[str],
        request_id: str = "",
        before_commit: Callable[[], None] = lambda: None,
    ) -> Any:
        def check() -> None:
            seen.append(jobs.responses.layout(scan_id) is not None)
            before_commit()

        return create(scan_id, scan, image_ids, request_id, before_commit=check)

    jobs.store.create_scan = watching


def test_the_manifest_is_written_before_the_scan_row_commits_and_retries_leave_none_behind(
    tmp_path: Path,
) -> None:
    model_root, data_root, store = tmp_path / "m", tmp_path / "d", tmp_path / "s" / "store.db"
    write_world(model_root, data_root, per_class=2)
    server = start_server(model_root, data_root, port=0, device="cpu", store=store)
    try:
        jobs = server._built.jobs
        seen: list[bool] = []
        _watch_commits(jobs, seen)
        with Client(server.address, timeout=60) as client:
            scan = client.scans.create("faces", ["relu"], "faces", k=2, request_id="once")
            again = client.scans.create("faces", ["relu"], "faces", k=2, request_id="once")
            assert again.id == scan.id
            with pytest.raises(MaxactError) as refused:
                client.scans.create("faces", ["conv"], "faces", k=2, request_id="once")
            assert refused.value.reason == "REQUEST_ID_REUSED"
            assert [i.state for i in client.scans.watch(scan.id)][-1] == "succeeded"
            assert client.responses.labels(scan.id, "relu")  # the run kept its matrix
        assert seen and all(seen)
        folders = sorted(p.name for p in (store.parent / "responses").iterdir())
        assert folders == [scan.id]
    finally:
        server.stop()
