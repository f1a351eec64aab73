"""Bad input on the HTTP face gets a clear JSON error with the right status and reason, names
what was wrong, leaks no server path, and the server keeps serving; plus the schema, the
metrics and the one log line per request."""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

import httpx
import pytest

from maxact.server.app import RunningServer, start_server

HOSTILE = "<img src=x onerror=alert(1)>"


def _error(response: httpx.Response, status: int, reason: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == status and error["reason"] == reason, error
    return str(error["message"])


def test_malformed_json_unknown_fields_and_wrong_content_type_are_refused(
    api: httpx.Client,
) -> None:
    headers = {"content-type": "application/json"}
    broken = api.post("/api/v1/scans", content=b'{"model": "net", ', headers=headers)
    _error(broken, 400, "MALFORMED_JSON")
    unknown = api.post(
        "/api/v1/scans",
        json={"model": "net", "layers": ["conv1"], "dataset": "squares", "colour": "red"},
    )
    assert "colour" in _error(unknown, 400, "UNKNOWN_FIELD")
    missing = api.post("/api/v1/scans", json={"model": "net"})
    assert "layers" in _error(missing, 400, "FIELD_REQUIRED")
    form = api.post("/api/v1/scans", content=b"model=net", headers={"content-type": "text/plain"})
    assert "application/json" in _error(form, 415, "UNSUPPORTED_MEDIA_TYPE")
    bad_prep = api.post(
        "/api/v1/scans",
        json={"model": "net", "layers": ["conv1"], "dataset": "squares",
              "preprocessing": {"size": [0, -1]}},
    )  # fmt: skip
    _error(bad_prep, 400, "INVALID_PREPROCESSING")
    bad_query = api.get("/api/v1/scans/x/neurons", params={"layer": "conv1", "channel": "two"})
    assert "channel" in _error(bad_query, 400, "INVALID_FIELD")
    assert api.get("/api/v1/models").status_code == 200


def test_huge_bodies_are_refused_before_they_are_read(api: httpx.Client) -> None:
    body = b'{"model": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    huge = api.post("/api/v1/scans", content=body, headers={"content-type": "application/json"})
    _error(huge, 413, "BODY_TOO_LARGE")

    def chunks():  # no Content-Length: the bound holds while the body is read
        for _ in range(40):
            yield b"x" * 65536

    streamed = api.post(
        "/api/v1/scans", content=chunks(), headers={"content-type": "application/json"}
    )
    _error(streamed, 413, "BODY_TOO_LARGE")
    assert api.get("/api/v1/models").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/models/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/models/%2Fetc%2Fpasswd",
        "/api/v1/models/net%00.onnx",
    ],
)
def test_path_traversal_in_a_model_name_is_refused_without_leaking_paths(
    http_server: RunningServer, api: httpx.Client, path: str
) -> None:
    response = api.get(path)
    assert response.status_code in (400, 404), response.text
    message = response.json()["error"]["message"]
    assert str(http_server.config.settings.model_root) not in message and "/tmp" not in message
    assert api.get("/api/v1/models").status_code == 200


def test_hostile_names_come_back_as_json_text_only(api: httpx.Client) -> None:
    model = api.get(f"/api/v1/models/{HOSTILE}")
    assert model.status_code in (400, 404)
    assert model.headers["content-type"].startswith("application/json")
    scan = api.post(
        "/api/v1/scans", json={"model": "net", "layers": [HOSTILE], "dataset": "squares"}
    )
    message = _error(scan, 400, "LAYER_NOT_FOUND")
    assert HOSTILE in message  # named, as data in a JSON string: nothing renders it
    missing = api.get(f"/api/v1/scans/{HOSTILE.replace('/', '')}")
    assert missing.status_code in (400, 404)


def test_openapi_lists_every_route(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/api/v1/models",
        "/api/v1/models/{model}",
        "/api/v1/datasets",
        "/api/v1/scans",
        "/api/v1/scans/{scan_id}",
        "/api/v1/scans/{scan_id}:cancel",
        "/api/v1/scans/{scan_id}/events",
        "/api/v1/scans/{scan_id}/neurons",
        "/api/v1/scans/{scan_id}/patches/{rank}",
        "/api/v1/scans/{scan_id}/statistics",
        "/api/v1/scans/{scan_id}/classes",
        "/api/v1/scans/{scan_id}/classes/{class_name}",
        "/api/v1/compare",
    }
    assert set(paths["/api/v1/scans/{scan_id}"]) == {"get", "delete"}


def test_http_requests_are_counted_beside_grpc_and_logged_once_each(
    world: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        start_server(*world, device="cpu", store=tmp_path / "s.sqlite", metrics_port=0) as server,
        httpx.Client(base_url=server.http_url, timeout=30) as api,
        caplog.at_level(logging.INFO, logger="maxact.server.http"),
    ):
        assert api.get("/api/v1/models", headers={"x-request-id": "req-42"}).status_code == 200
        assert api.get("/api/v1/scans/nope").status_code == 404
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            metrics = response.read().decode()
    assert 'http_server_requests_total{method="GET",route="/api/v1/models",status="200"}' in metrics
    assert 'route="/api/v1/scans/{scan_id}",status="404"' in metrics
    assert "grpc_server_started_total" in metrics or "grpc_server_handled_total" in metrics
    lines = [r for r in caplog.records if getattr(r, "path", "") == "/api/v1/models"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.request_id, line.status, line.route) == ("req-42", 200, "/api/v1/models")
    assert json.loads(json.dumps({"ms": line.ms}))["ms"] >= 0


def test_a_warning_about_a_model_with_any_name_travels_as_a_safe_header(
    world: tuple[Path, Path], api: httpx.Client
) -> None:
    from tests.onnx_models import bright_square_model, save

    save(bright_square_model(64), world[0], "nëtz-模型")  # no sidecar: a warning names it
    created = api.post(
        "/api/v1/scans", json={"model": "nëtz-模型", "layers": ["conv1"], "dataset": "squares"}
    )
    assert created.status_code == 200, created.text
    warning = created.headers["x-maxact-warning"]
    assert warning.isascii() and "\\u6a21" in warning
