"""Scans over HTTP on a real server: create (idempotent by request_id), Server-Sent Events
until the final state, cancel, delete; a client that leaves an event stream mid-scan leaves no
task behind; the admission slots are shared with gRPC."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from maxact.client import Client, MaxactError
from maxact.server.app import RunningServer, start_server
from tests.datasets import slow_scan
from tests.http.conftest import square_images
from tests.onnx_models import bright_square_model, save

SQUARES = {"model": "net", "layers": ["conv1"], "dataset": "squares", "k": 3}
SLOW = {"model": "heavy", "layers": ["relu5"], "dataset": "many", "k": 2}


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    save(bright_square_model(64), model_root, "net")
    square_images(data_root / "squares", 6)
    slow_scan(model_root, data_root, 64)
    return model_root, data_root


@pytest.fixture
def server(roots: tuple[Path, Path], tmp_path: Path) -> Iterator[RunningServer]:
    with start_server(*roots, device="cpu", store=tmp_path / "s.sqlite", checkpoint_images=4) as s:
        yield s


def _events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(event name, data document) of each Server-Sent Event of a streamed response."""
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            yield kind, json.loads(line[len("data: ") :])


def test_created_scan_streams_progress_then_its_final_state_and_the_stream_ends(
    server: RunningServer,
) -> None:
    with httpx.Client(base_url=server.http_url, timeout=120) as api:
        body = {**SQUARES, "request_id": "same-1", "preprocessing": {"scale": 1 / 255}}
        created = api.post("/api/v1/scans", json=body)
        assert created.status_code == 200, created.text
        scan = created.json()
        assert scan["state"] in ("queued", "running") and scan["layers"] == ["conv1"]
        again = api.post("/api/v1/scans", json=body).json()
        assert again["id"] == scan["id"]  # the retry returns the same scan
        with api.stream("GET", f"/api/v1/scans/{scan['id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = list(_events(stream))
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "done" and set(kinds[:-1]) <= {"progress"}
        final = events[-1][1]
        assert final["state"] == "succeeded" and final["images_done"] == 6
        done = [doc["images_done"] for _, doc in events]
        assert done == sorted(done)
        assert api.get(f"/api/v1/scans/{scan['id']}").json() == final
        neuron = api.get(
            f"/api/v1/scans/{scan['id']}/neurons", params={"layer": "conv1", "channel": 0}
        )
        patch_url = neuron.json()["results"][0]["patch_url"]
        assert api.get(patch_url).status_code == 200  # kept from the document's rendering
        deleted = api.delete(f"/api/v1/scans/{scan['id']}")
        assert deleted.json() == {"id": scan["id"], "deleted": True}
        gone = api.get(f"/api/v1/scans/{scan['id']}")
        assert gone.status_code == 404 and gone.json()["error"]["reason"] == "SCAN_NOT_FOUND"
        patch = api.get(patch_url)  # a kept patch does not outlive its scan
        assert patch.status_code == 404 and patch.json()["error"]["reason"] == "SCAN_NOT_FOUND"


def test_a_slow_scan_streams_several_progress_events_and_cancel_stops_it(
    server: RunningServer,
) -> None:
    with httpx.Client(base_url=server.http_url, timeout=120) as api:
        scan = api.post("/api/v1/scans", json=SLOW).json()
        progress = []
        with api.stream("GET", f"/api/v1/scans/{scan['id']}/events") as stream:
            for kind, doc in _events(stream):
                progress.append(doc["images_done"])
                if kind == "progress" and doc["images_done"] > 0 and len(progress) >= 2:
                    cancelled = api.post(f"/api/v1/scans/{scan['id']}:cancel")
                    assert cancelled.status_code == 200
                if kind == "done":
                    assert doc["state"] == "cancelled"
        assert len(progress) >= 3 and progress[-1] < 64


async def _task_count() -> int:
    return len(asyncio.all_tasks())


def _tasks(server: RunningServer) -> int:
    loop = server._loop  # the server's own event loop: where a forgotten stream would live
    return asyncio.run_coroutine_threadsafe(_task_count(), loop).result(timeout=10)


def test_a_client_leaving_an_event_stream_mid_scan_leaves_no_task_behind(
    server: RunningServer,
) -> None:
    with httpx.Client(base_url=server.http_url, timeout=120) as api:
        scan = api.post("/api/v1/scans", json=SLOW).json()
        api.get("/api/v1/models")  # warm: the first request may start lasting tasks
        baseline = _tasks(server)
        for _ in range(3):
            with (
                httpx.Client(base_url=server.http_url, timeout=30) as leaving,
                leaving.stream("GET", f"/api/v1/scans/{scan['id']}/events") as stream,
            ):
                events = _events(stream)
                assert next(events)[0] == "progress"
        deadline = time.monotonic() + 10
        while _tasks(server) > baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _tasks(server) <= baseline
        assert api.post(f"/api/v1/scans/{scan['id']}:cancel").status_code == 200
        assert api.get("/api/v1/models").status_code == 200


def test_admission_slots_are_shared_by_http_and_grpc(
    roots: tuple[Path, Path], tmp_path: Path
) -> None:
    with (
        start_server(
            *roots, device="cpu", store=tmp_path / "s.sqlite", max_concurrent_rpcs=1
        ) as server,
        httpx.Client(base_url=server.http_url, timeout=60) as api,
    ):
        scan = api.post("/api/v1/scans", json=SLOW).json()
        with api.stream("GET", f"/api/v1/scans/{scan['id']}/events") as stream:
            events = _events(stream)  # kept: closing the reader would close the stream
            next(events)  # the stream holds the one slot now
            busy = api.get("/api/v1/models")
            assert busy.status_code == 429
            assert busy.json()["error"]["reason"] == "TOO_MANY_CALLS"
            with Client(server.address, timeout=30) as client, pytest.raises(MaxactError) as err:
                client.list_models()
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        deadline = time.monotonic() + 10
        while api.get("/api/v1/models").status_code != 200:
            assert time.monotonic() < deadline, "the slot was not given back"
            time.sleep(0.1)
        api.post(f"/api/v1/scans/{scan['id']}:cancel")


def test_a_queued_scans_stream_sends_keep_alive_comments_and_a_leaving_client_leaves_nothing(
    roots: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from maxact.server.http.api import scans as scan_routes

    monkeypatch.setattr(scan_routes, "HEARTBEAT_SECONDS", 0.2)
    with (
        start_server(
            *roots, device="cpu", store=tmp_path / "s.sqlite", max_running_scans=1
        ) as server,
        httpx.Client(base_url=server.http_url, timeout=60) as api,
    ):
        running = api.post("/api/v1/scans", json=SLOW).json()
        queued = api.post("/api/v1/scans", json={**SLOW, "k": 3}).json()
        api.get("/api/v1/models")
        baseline = _tasks(server)
        with (
            httpx.Client(base_url=server.http_url, timeout=30) as leaving,
            leaving.stream("GET", f"/api/v1/scans/{queued['id']}/events") as stream,
        ):
            lines = stream.iter_lines()
            seen = [next(lines) for _ in range(6)]
        assert seen[0] == "event: progress" and '"state":"queued"' in seen[1]
        assert ": keep-alive" in seen[2:]
        deadline = time.monotonic() + 10
        while _tasks(server) > baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _tasks(server) <= baseline
        for scan in (queued, running):
            api.post(f"/api/v1/scans/{scan['id']}:cancel")


def test_stopping_the_server_ends_open_event_streams_within_the_grace(
    roots: tuple[Path, Path], tmp_path: Path
) -> None:
    server = start_server(*roots, device="cpu", store=tmp_path / "s.sqlite")
    try:
        with (
            httpx.Client(base_url=server.http_url, timeout=60) as api,
            api.stream(
                "GET", f"/api/v1/scans/{api.post('/api/v1/scans', json=SLOW).json()['id']}/events"
            ) as stream,
        ):
            events = _events(stream)
            assert next(events)[0] == "progress"
            began = time.monotonic()
            server.stop(grace=1.0)
            stopped = time.monotonic() - began
            try:  # the stream ends: the server closed it (mid-stream, or after a last event)
                for _ in events:
                    pass
            except httpx.HTTPError:
                pass
            ended = time.monotonic() - began
    finally:
        server.stop()
    assert stopped < 15 and ended < 20, (stopped, ended)
