"""API v1 conventions through the real server and client: idempotent CreateScan
(request_id), DeleteScan, opaque page tokens on every list, Timestamps, a failed scan's
google.rpc.Status, and one TopKEvent message for both top-k streams."""

from __future__ import annotations

import base64
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest

from maxact.client import Client
from maxact.common.kinds import TopKMode
from maxact.server.data.datasets import DatasetCatalog
from maxact.server.data.preprocess import Preprocessing
from maxact.server.errors import Code, ServiceError
from maxact.server.jobs.scan_jobs import ScanJobs
from maxact.server.jobs.store import Store
from maxact.server.models.registry import ModelRegistry
from maxact.server.service.pagination import encode_token
from maxact.v1 import (
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    scan_service_pb2,
    scan_service_pb2_grpc,
    topk_service_pb2,
)
from tests.datasets import slow_scan, write_images
from tests.errors import raised, raw_channel, raw_error
from tests.onnx_models import bright_square_model, save

TABLES = ("scans", "checkpoints", "topk_rows", "layer_statistics", "scan_shards")


def _finished(client: Client, scan_id: str) -> str:
    return [info.state for info in client.scans.watch(scan_id)][-1]


# ------------------------------------------------------------------ CreateScan idempotency


def test_create_scan_retried_with_the_same_request_id_returns_the_same_scan(
    served: Client,
) -> None:
    first = served.scans.create("net", ["conv1"], "small", k=2, request_id="retry-1")
    again = served.scans.create("net", ["conv1"], "small", k=2, request_id="retry-1")
    assert again.id == first.id and again.request_id == "retry-1"
    other = served.scans.create("net", ["conv1"], "small", k=2)  # a fresh uuid4 each call
    assert other.id != first.id and uuid.UUID(other.request_id)
    error = raised(
        lambda: served.scans.create("net", ["conv1"], "small", k=3, request_id="retry-1")
    )
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert "retry-1" in error.message and first.id in error.message
    assert sorted(s.id for s in served.scans.list()) == sorted([first.id, other.id])


def test_a_concurrent_double_submit_creates_one_scan(served: Client) -> None:
    ids: list[str] = []
    start = threading.Barrier(4)

    def submit() -> None:
        start.wait()
        ids.append(served.scans.create("net", ["conv1"], "small", k=2, request_id="twice").id)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 4 and len(set(ids)) == 1
    assert [s.id for s in served.scans.list()] == ids[:1]


def test_create_scan_past_its_deadline_leaves_no_scan_or_one_the_retry_finds(
    served: Client,
) -> None:
    stub = scan_service_pb2_grpc.ScanServiceStub(raw_channel(served))
    request = scan_service_pb2.CreateScanRequest(
        model="net", layers=["conv1"], dataset="small", k=2, request_id="short-deadline"
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateScan(request, timeout=0.001)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.3)  # let the server finish whatever it was doing
    orphans = [s for s in served.scans.list() if s.request_id == "short-deadline"]
    assert len(orphans) <= 1  # committed just before the deadline, or not at all
    retried = stub.CreateScan(request, timeout=30).scan
    assert [s.name for s in served.scans.list() if s.request_id == "short-deadline"] == [
        retried.name
    ]
    assert all(f"scans/{o.id}" == retried.name for o in orphans)


def test_a_scan_whose_deadline_passed_before_commit_is_never_stored(
    model_root: Path, data_root: Path, tmp_path: Path
) -> None:
    save(bright_square_model(32), model_root, "net")
    write_images(data_root / "small", 3, 32)
    store = Store(tmp_path / "s.sqlite")
    jobs = ScanJobs(store, ModelRegistry(model_root, "cpu"), DatasetCatalog(data_root))
    with pytest.raises(ServiceError) as caught:
        jobs.create(
            "net", ["conv1"], "small", 2, TopKMode.IMAGE, Preprocessing(), "late", time.monotonic()
        )
    assert (caught.value.code, caught.value.reason) == (
        Code.DEADLINE_EXCEEDED,
        "DEADLINE_EXCEEDED",
    )
    assert store.list_scans(10) == []
    record = jobs.create("net", ["conv1"], "small", 2, TopKMode.IMAGE, Preprocessing(), "late")
    assert [r.id for r in store.list_scans(10)] == [record.id]  # the id is free for the retry
    jobs.shutdown()


# ------------------------------------------------------------------------------ DeleteScan


def test_delete_scan_removes_the_scan_and_everything_stored_for_it(
    served: Client, store_location: Path | str
) -> None:
    scan = served.scans.create("net", ["conv1", "relu1"], "small", k=2)
    kept = served.scans.create("net", ["conv1"], "small", k=2)
    assert _finished(served, scan.id) == _finished(served, kept.id) == "succeeded"
    store = Store(store_location)
    before = store.row_counts(scan.id)
    assert before["scans"] == 1 and before["topk_rows"] > 0 and before["layer_statistics"] == 2
    served.delete_scan(scan.id)
    assert store.row_counts(scan.id) == dict.fromkeys(TABLES, 0)
    error = raised(lambda: served.scans.get(scan.id))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "SCAN_NOT_FOUND")
    assert raised(lambda: served.delete_scan(scan.id)).code == grpc.StatusCode.NOT_FOUND
    assert [s.id for s in served.scans.list()] == [kept.id]
    assert store.row_counts(kept.id)["topk_rows"] == before["topk_rows"] // 2


def test_deleting_a_running_scan_cancels_it_and_leaves_no_rows(
    client: Client, model_root: Path, data_root: Path, tmp_path: Path, store_location: Path | str
) -> None:
    from maxact.server.app import start_server

    slow_scan(model_root, data_root, 120)
    path = store_location
    running = start_server(
        model_root, data_root, port=0, device="cpu", store=path, state_dir=tmp_path / "state"
    )
    with running, Client(running.address, timeout=60) as own:
        scan = own.scans.create("heavy", ["relu5"], "many", k=3)
        queued = own.scans.create("heavy", ["relu5"], "many", k=3)  # waits for the one slot
        for info in own.scans.watch(scan.id):
            if info.images_done > 0:
                break
        started = time.monotonic()
        own.delete_scan(queued.id)  # not held up by the running scan
        assert time.monotonic() - started < 5
        assert Store(path).row_counts(queued.id) == dict.fromkeys(TABLES, 0)
        own.delete_scan(scan.id)
        assert Store(path).row_counts(scan.id) == dict.fromkeys(TABLES, 0)
        time.sleep(0.3)  # a worker that outlived the delete would write a checkpoint now
        assert Store(path).row_counts(scan.id) == dict.fromkeys(TABLES, 0)
        assert own.scans.list() == []


# ------------------------------------------------------------------------------ pagination


def _pages(fetch: Callable[[int, str], tuple[list[str], str]], size: int) -> list[list[str]]:
    pages, token = [], ""
    while True:
        items, token = fetch(size, token)
        pages.append(items)
        if not token:
            return pages


def _check_paging(fetch: Callable[[int, str], tuple[list[str], str]], expected: list[str]) -> None:
    for size in range(1, len(expected) + 2):
        pages = _pages(fetch, size)
        assert [name for page in pages for name in page] == expected, f"page_size {size}"
        assert all(len(page) == size for page in pages[:-1]) and len(pages[-1]) <= size


def test_models_datasets_and_scans_page_with_opaque_tokens(
    served: Client, model_root: Path, data_root: Path
) -> None:
    (model_root / "b").mkdir()
    for name in ("b/one", "a", "c", "b/two"):
        shutil.copy(model_root / "net.onnx", model_root / f"{name}.onnx")
    for name in ("d2", "d1", "d3"):
        write_images(data_root / name, 1, 16)
    scans = [served.scans.create("net", ["conv1"], "small", k=1).id for _ in range(4)]

    def models(size: int, token: str) -> tuple[list[str], str]:
        items, next_token = served.list_models_page(size, token)
        return [m.name for m in items], next_token

    def datasets(size: int, token: str) -> tuple[list[str], str]:
        items, next_token = served.list_datasets_page(size, token)
        return [d.name for d in items], next_token

    def scan_ids(size: int, token: str) -> tuple[list[str], str]:
        items, next_token = served.scans.list_page(size, token)
        return [s.id for s in items], next_token

    _check_paging(models, ["a", "b/one", "b/two", "c", "net"])
    _check_paging(datasets, ["d1", "d2", "d3", "small"])
    _check_paging(scan_ids, scans[::-1])  # newest first
    token = served.list_models_page(2)[1]
    assert "b/one" not in token  # opaque, not the name itself
    assert [m.name for m in served.list_models()] == ["a", "b/one", "b/two", "c", "net"]


def test_foreign_or_malformed_page_tokens_are_invalid_argument(served: Client) -> None:
    channel = raw_channel(served)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    datasets = dataset_service_pb2_grpc.DatasetServiceStub(channel)
    scans = scan_service_pb2_grpc.ScanServiceStub(channel)
    for _ in range(2):
        served.scans.create("net", ["conv1"], "small", k=1)
    scan_token = served.scans.list_page(1)[1]
    assert scan_token
    lists = [
        (models.ListModels, model_service_pb2.ListModelsRequest),
        (datasets.ListDatasets, dataset_service_pb2.ListDatasetsRequest),
        (scans.ListScans, scan_service_pb2.ListScansRequest),
    ]
    bad_tokens = [
        "²",
        "7" * 5000,
        base64.urlsafe_b64encode(b"\x00\xffrandom bytes").decode(),
        base64.b64encode(b'{"list": "models", "after": 3}').decode(),  # wrong key type
        base64.b64encode(b"[1, 2]").decode(),
    ]
    for method, request_type in lists:
        is_scans = request_type is scan_service_pb2.ListScansRequest
        foreign = encode_token("models", "net") if is_scans else scan_token
        for token in [*bad_tokens, foreign]:
            with pytest.raises(grpc.RpcError) as caught:
                method(request_type(page_size=1, page_token=token), timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, token[:20]
            error = raw_error(lambda: method(request_type(page_token=token), timeout=30))  # noqa: B023
            assert error.reason == "INVALID_PAGE_TOKEN"
        error = raw_error(lambda: method(request_type(page_size=-1), timeout=30))  # noqa: B023
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PAGE_SIZE",
        )
    assert [m.name for m in served.list_models()] == ["net"]  # still serving


# ----------------------------------------------------------- Timestamps and failure Status


def test_scan_times_are_timestamps_in_utc(served: Client) -> None:
    before = datetime.now(timezone.utc)
    scan = served.scans.create("net", ["conv1"], "small", k=1)
    assert _finished(served, scan.id) == "succeeded"
    after = datetime.now(timezone.utc)
    info = served.scans.get(scan.id)
    assert info.create_time is not None and info.update_time is not None
    assert info.create_time.tzinfo is not None
    assert before <= info.create_time <= info.update_time <= after
    assert info.create_time == scan.create_time


def test_a_failed_scan_carries_a_status_with_code_and_reason(
    served: Client, model_root: Path, data_root: Path
) -> None:
    slow_scan(model_root, data_root, 60)
    blocker = served.scans.create("heavy", ["relu5"], "many", k=1)  # holds the only slot
    victim = served.scans.create("net", ["conv1"], "small", k=1)
    assert served.scans.get(victim.id).state == "queued"
    served.unload_model("net")
    (model_root / "net.onnx").unlink()
    served.scans.cancel(blocker.id)
    assert _finished(served, victim.id) == "failed"
    info = served.scans.get(victim.id)
    assert info.failure is not None
    assert (info.failure.code, info.failure.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "MODEL_NOT_FOUND",
    )
    assert "net" in info.failure.message and info.error == info.failure.message


# ------------------------------------------------------------------ one event, two streams


def test_both_topk_streams_send_the_same_event_message(served: Client, data_root: Path) -> None:
    for response in (
        topk_service_pb2.StreamTopKResponse,
        topk_service_pb2.StreamTopKImagesResponse,
    ):
        event = response.DESCRIPTOR.fields_by_name["event"]
        assert event.message_type is topk_service_pb2.TopKEvent.DESCRIPTOR
    files = sorted((data_root / "small").iterdir())
    images = [(f.name, f.read_bytes()) for f in files]
    from_dataset = served.topk("net", "conv1", 0, dataset="small", k=3).result()
    from_client = served.topk_images("net", "conv1", 0, images, k=3).result()
    assert from_dataset.images_scanned == from_client.images_scanned == len(files)
    assert [p.hit for p in from_dataset.patches] == [p.hit for p in from_client.patches]
    assert [p.png for p in from_dataset.patches] == [p.png for p in from_client.patches]


# ------------------------------------------------------------- client retries, store upgrade


def test_the_client_retries_only_methods_that_exist_and_are_safe_to_repeat() -> None:
    from google.protobuf import descriptor_pool

    from maxact.client.channel import SERVICE_CONFIG

    pool = descriptor_pool.Default()
    (config,) = SERVICE_CONFIG["methodConfig"]
    names = [(n["service"], n["method"]) for n in config["name"]]
    for service, method in names:
        assert pool.FindServiceByName(service).FindMethodByName(method) is not None
    assert ("maxact.v1.ScanService", "CreateScan") in names  # safe: it carries a request_id
    for unsafe in ("DeleteScan", "UploadModel", "StreamTopKImages"):
        assert unsafe not in [method for _, method in names]
    assert config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_a_version_2_store_gains_request_ids_and_keeps_failed_messages(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE scans (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, model TEXT NOT NULL,"
        " layers TEXT NOT NULL, dataset TEXT NOT NULL, k INTEGER NOT NULL, mode TEXT NOT NULL,"
        " preprocessing TEXT NOT NULL, state TEXT NOT NULL, images_done INTEGER NOT NULL"
        " DEFAULT 0, images_failed INTEGER NOT NULL DEFAULT 0, images_total INTEGER NOT NULL"
        " DEFAULT 0, error TEXT NOT NULL DEFAULT '', create_time REAL NOT NULL, update_time"
        " REAL NOT NULL, image_ids TEXT NOT NULL, checkpoint_position INTEGER NOT NULL DEFAULT"
        " 0, checkpoint_done INTEGER NOT NULL DEFAULT 0, checkpoint_failed INTEGER NOT NULL"
        " DEFAULT 0)"
    )
    db.execute(
        "INSERT INTO scans (id, seq, model, layers, dataset, k, mode, preprocessing, state,"
        " error, create_time, update_time, image_ids) VALUES ('s1', 1, 'm', '[\"l\"]', 'd', 3,"
        " 'image', '{}', 'failed', 'it broke', 0, 0, '[]')"
    )
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    record = Store(path).get("s1")
    assert record is not None and record.request_id == ""
    assert record.error is not None
    assert (record.error.code, record.error.reason, record.error.message) == (
        grpc.StatusCode.UNKNOWN.value[0],
        "SCAN_FAILED",
        "it broke",
    )
