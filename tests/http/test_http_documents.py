"""The JSON API answers with exactly the CLI's `--json` documents for the same question (one
builder serves both), over a real server: the neuron equals the brute-force top-k, the class
answer equals the independent oracle of tests/test_classes.py, and every patch_url serves the
same PNG the CLI writes with --out."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from maxact.client import Client
from tests.cli_run import run_json
from tests.test_classes import assert_same, oracle, oracle_classes, world  # noqa: F401


@pytest.fixture(scope="module")
def api(world: dict) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=world["http"], timeout=120) as client:
        yield client


def _get(api: httpx.Client, path: str, **params: Any) -> Any:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _without_patch_urls(doc: dict) -> dict:
    for result in doc.get("results", []):
        result.pop("patch_url")
    return doc


def test_catalogue_and_scan_documents_equal_the_cli_json(
    world: dict,  # noqa: F811
    api: httpx.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, scan = world["address"], world["scans"]["detectors/shapes"]
    assert _get(api, "/api/v1/models") == run_json(capsys, "--server", server, "models", "--json")
    assert _get(api, "/api/v1/datasets") == run_json(
        capsys, "--server", server, "datasets", "--json"
    )
    layers = _get(api, "/api/v1/models/detectors")
    assert layers == run_json(capsys, "--server", server, "layers", "detectors", "--json")
    (logits,) = [layer for layer in layers["layers"] if layer["name"] == "logits"]
    assert logits["labels"] == ["vertical", "horizontal", "red", "nothing", "always"]
    assert _get(api, f"/api/v1/scans/{scan}") == run_json(
        capsys, "--server", server, "scan", "get", scan, "--json"
    )
    assert _get(api, "/api/v1/scans") == run_json(
        capsys, "--server", server, "scan", "list", "--json"
    )


@pytest.mark.parametrize("extra", [[], ["--bottom"], ["-k", "3", "--render", "mask"]])
def test_neuron_document_equals_the_cli_json_plus_a_patch_url_per_result(
    world: dict,  # noqa: F811
    api: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
) -> None:
    scan = world["scans"]["detectors/shapes"]
    params: dict[str, Any] = {"layer": "features", "channel": 2}
    if "--bottom" in extra:
        params["bottom"] = "true"
    if "-k" in extra:
        params.update(k=3, render="mask")
    doc = _get(api, f"/api/v1/scans/{scan}/neurons", **params)
    assert all(r["patch_url"].startswith(f"/api/v1/scans/{scan}/patches/") for r in doc["results"])
    cli = run_json(capsys, "--server", world["address"], "neuron", scan, "features", "2", *extra,
                   "--json")  # fmt: skip
    assert _without_patch_urls(doc) == cli


def test_neuron_equals_the_bruteforce_top_k(
    world: dict,  # noqa: F811
    oracle: tuple[list[str], Any],  # noqa: F811
    api: httpx.Client,
) -> None:
    ids, maxima = oracle
    scan = world["scans"]["detectors/shapes"]
    for channel in (0, 1, 2):
        doc = _get(api, f"/api/v1/scans/{scan}/neurons", layer="features", channel=channel)
        order = sorted(range(len(ids)), key=lambda i: (-maxima[i, channel], i))[:9]
        assert [r["image"] for r in doc["results"]] == [ids[i] for i in order]
        assert [r["score"] for r in doc["results"]] == pytest.approx(
            maxima[order, channel], rel=1e-5
        )


def test_patch_urls_serve_the_pngs_the_cli_writes_and_may_be_cached(
    world: dict,  # noqa: F811
    api: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    scan = world["scans"]["detectors/shapes"]
    doc = _get(api, f"/api/v1/scans/{scan}/neurons", layer="features", channel=1, k=4)
    run_json(capsys, "--server", world["address"], "neuron", scan, "features", "1", "-k", "4",
             "--out", str(tmp_path), "--json")  # fmt: skip
    for result in doc["results"]:
        image = api.get(result["patch_url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert "immutable" in image.headers["cache-control"]
        assert image.content == (tmp_path / f"rank_{result['rank']}.png").read_bytes()
    missing = api.get(
        f"/api/v1/scans/{scan}/patches/10", params={"layer": "features", "channel": 1}
    )
    assert missing.status_code == 400 and missing.json()["error"]["reason"] == "K_OUT_OF_RANGE"


def test_class_answers_equal_the_cli_json_and_the_oracle(
    world: dict,  # noqa: F811
    oracle: tuple[list[str], Any],  # noqa: F811
    api: httpx.Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, scans = world["address"], world["scans"]
    scan = scans["detectors/shapes"]
    classes = _get(api, f"/api/v1/scans/{scan}/classes", layer="features")
    assert classes == run_json(capsys, "--server", server, "classes", scan, "features", "--json")
    assert_same(classes, {"scan": scan, "layer": "features", **oracle_classes(*oracle, 0.5, 10)})
    strict = _get(api, f"/api/v1/scans/{scan}/classes", layer="features", selective=0.9, top=3)
    assert_same(strict, oracle_classes(*oracle, selective=0.9, top=3))
    red = _get(api, f"/api/v1/scans/{scan}/classes/redblobs", layer="features", top=2, k=4)
    assert red == run_json(capsys, "--server", server, "class", scan, "features", "redblobs",
                           "--top", "2", "-k", "4", "--json")  # fmt: skip
    default = _get(api, f"/api/v1/scans/{scan}/classes/redblobs", layer="features")
    assert default == run_json(
        capsys, "--server", server, "class", scan, "features", "redblobs", "--json"
    )
    compare = _get(api, "/api/v1/compare", a=scan, b=scans["retrained/shapes"], layer="features")
    assert compare == run_json(capsys, "--server", server, "compare", scan,
                               scans["retrained/shapes"], "features", "--json")  # fmt: skip


def test_statistics_document_is_the_clients_typed_statistics(
    world: dict,  # noqa: F811
    api: httpx.Client,
) -> None:
    scan = world["scans"]["detectors/shapes"]
    doc = _get(api, f"/api/v1/scans/{scan}/statistics", layer="features")
    with Client(world["address"], timeout=60) as client:
        typed = client.scans.statistics(scan, "features")
    assert doc["images_scanned"] == typed.images_scanned == 200
    assert doc["channels"] == [dataclasses.asdict(c) for c in typed.channels]
    assert [c["dead"] for c in doc["channels"]] == [False, False, False, True, False]
