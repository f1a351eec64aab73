"""Per-image responses in the web UI and the HTTP API, through the real server on loopback:
labels and histograms on the layer and neuron pages (against numpy and scikit-learn), the
quantile document and the exported matrix against the CLI's, and a scan that kept none."""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from maxact.client import Client
from maxact.client.cli.main import main
from maxact.common.defaults import HISTOGRAM_BINS, LABEL_AUC
from maxact.server.app import start_server
from maxact.server.http.ui.patches import THUMBNAIL
from maxact.server.http.ui.responses_parts import NEURON_BINS
from tests.responses_world import (
    CONSTANT,
    FACE,
    dataset_order,
    oracle_histogram,
    oracle_label,
    oracle_matrix,
    oracle_quantile,
    oracle_similar,
    write_world,
)

K = 5


@dataclass(frozen=True)
class Web:
    client: Client
    api: httpx.Client
    scan: str  # responses kept (the default)
    off: str  # made over HTTP with "responses": "off"
    data_root: Path
    state: Path  # the server's state folder (the per-image responses live under it)


def _finished(api: httpx.Client, body: dict[str, Any]) -> str:
    made = api.post("/api/v1/scans", json=body)
    assert made.status_code == 200, made.text
    scan: str = made.json()["id"]
    with api.stream("GET", f"/api/v1/scans/{scan}/events") as events:
        final = [json.loads(line[5:]) for line in events.iter_lines() if line.startswith("data:")]
    assert final[-1]["state"] == "succeeded"
    return scan


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    root = tmp_path_factory.mktemp("responses_web")
    model_root, data_root = root / "models", root / "data"
    write_world(model_root, data_root)
    with (
        start_server(
            model_root, data_root, port=0, device="cpu", store=root / "s.sqlite"
        ) as server,
        Client(server.address, timeout=120) as client,
        httpx.Client(base_url=server.http_url, timeout=60) as api,
    ):
        scan = _finished(api, {"model": "faces", "layers": ["relu"], "dataset": "faces", "k": K})
        off = _finished(
            api,
            {"model": "faces", "layers": ["relu"], "dataset": "faces", "k": K, "responses": "off"},
        )
        yield Web(client, api, scan, off, data_root, root)


def _row(page: str, channel: int) -> str:
    found = re.search(rf'<section class="neuron" id="c{channel}".*?</section>', page, re.S)
    assert found is not None, f"no row of channel {channel}"
    return found.group(0)


def _counts(fragment: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-count="(\d+)"', fragment)]


def _label(fragment: str) -> str | None:
    found = re.search(r'<span class="rlabel"[^>]*>([^<]*)</span>', fragment)
    return html.unescape(found.group(1)) if found else None


def test_layer_rows_show_the_face_label_and_histograms_whose_counts_equal_numpys(
    web: Web,
) -> None:
    page = web.api.get(f"/scans/{web.scan}/layers", params={"layer": "relu"})
    assert page.status_code == 200
    matrix = oracle_matrix(web.data_root, "relu")
    _, labels = dataset_order(web.data_root)
    label, auc, _, _ = oracle_label(matrix[:, FACE], labels, K)
    assert label == "face" and auc > 0.99
    assert _label(_row(page.text, FACE)) == f"face (AUC {auc:.2f})"
    assert _label(_row(page.text, CONSTANT)) is None
    for channel in range(matrix.shape[1]):
        _, counts = oracle_histogram(matrix[:, channel], HISTOGRAM_BINS)
        assert _counts(_row(page.text, channel)) == counts, channel
    again = web.api.get(f"/scans/{web.scan}/layers", params={"layer": "relu"})  # remembered
    assert _label(_row(again.text, FACE)) == f"face (AUC {auc:.2f})"
    assert _label(_row(again.text, CONSTANT)) is None


def _responses(web: Web, scan: str, channel: int) -> httpx.Response:
    """The neuron page's responses sections, as its htmx call asks for them."""
    query: dict[str, str | int] = {"layer": "relu", "channel": channel}
    found = web.api.get(
        f"/scans/{scan}/neurons/responses", params=query, headers={"HX-Request": "true"}
    )
    assert found.status_code == 200, found.text[:300]
    return found


def test_the_neuron_page_shows_label_histogram_typical_examples_and_similar_channels(
    web: Web,
) -> None:
    matrix = oracle_matrix(web.data_root, "relu")
    ids, _ = dataset_order(web.data_root)
    page = _responses(web, web.scan, 2)
    _, counts = oracle_histogram(matrix[:, 2], NEURON_BINS)
    assert _counts(page.text) == counts
    _, nearest = oracle_quantile(matrix[:, 2], 0.5, K)
    typical = re.search(r'<div class="patches typical" id="typical">(.*?)</div>', page.text, re.S)
    assert typical is not None
    shown = re.findall(r'<span class="image">([^<]*)</span>', typical.group(1))
    assert [html.unescape(s) for s in shown] == [ids[i] for i in nearest]
    sources = [html.unescape(s) for s in re.findall(r'src="([^"]*)"', typical.group(1))]
    assert len(sources) == K
    for rank, src in enumerate(sources):  # each image loads: the dataset's own picture
        image = web.api.get(src)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (THUMBNAIL, THUMBNAIL), rank
    similar = re.search(r'<ul class="similar" id="similar">(.*?)</ul>', page.text, re.S)
    assert similar is not None
    linked = [int(c) for c in re.findall(r"channel=(\d+)", similar.group(1))]
    assert linked == [c for c, _ in oracle_similar(matrix, 2, len(linked))]
    face = _responses(web, web.scan, FACE).text
    assert (_label(face) or "").startswith("face (AUC ")
    assert '<span id="rlabel" hx-swap-oob="true">' in face  # it goes into the page's heading
    neuron = web.api.get(f"/scans/{web.scan}/neurons", params={"layer": "relu", "channel": FACE})
    assert '<span id="rlabel"></span>' in neuron.text


def test_a_finished_scans_responses_sections_are_computed_once_then_served_from_memory(
    web: Web,
) -> None:
    first = _responses(web, web.scan, 4).text
    assert "data-count" in first
    kept = web.state / "responses" / web.scan
    moved = kept.with_name("moved-away")
    kept.rename(moved)  # the matrix is gone: only a kept answer can still be shown
    try:
        assert _responses(web, web.scan, 4).text == first
        other = web.api.get(
            f"/scans/{web.scan}/neurons/responses",
            params={"layer": "relu", "channel": 5},
            headers={"HX-Request": "true"},
        )
        assert "data-count" not in other.text  # another channel must read the matrix
    finally:
        moved.rename(kept)
    assert "data-count" in _responses(web, web.scan, 5).text


def _filtered(web: Web, text: str) -> tuple[str, list[int]]:
    page = web.api.get(f"/scans/{web.scan}/layers", params={"layer": "relu", "q": text})
    assert page.status_code == 200
    return page.text, [
        int(c) for c in re.findall(r'<section class="neuron" id="c(\d+)"', page.text)
    ]


def test_the_layer_filter_matches_response_labels(web: Web) -> None:
    labelled = {
        c.channel: c.label
        for c in web.client.responses.labels(web.scan, "relu")
        if c.label and c.auc >= LABEL_AUC
    }
    page, rows = _filtered(web, "face")
    assert labelled[FACE] == "face"
    assert {c for c, name in labelled.items() if name == "face"} <= set(rows)
    for channel in rows:
        assert "face" in _row(page, channel)
    # only a response label holds "AUC": the filter keeps exactly the labelled channels
    page, rows = _filtered(web, "auc")
    assert rows == sorted(labelled)
    assert all(f"{labelled[c]} (AUC" in _row(page, c) for c in rows)


def test_a_constant_channel_has_no_label_and_no_similar_channels_on_its_page(web: Web) -> None:
    page = _responses(web, web.scan, CONSTANT).text
    assert _label(page) is None
    assert 'id="similar"' not in page and "the channel is constant" in page


def test_a_scan_without_responses_renders_its_pages_without_the_extras(web: Web) -> None:
    layer = web.api.get(f"/scans/{web.off}/layers", params={"layer": "relu"})
    neuron = web.api.get(f"/scans/{web.off}/neurons", params={"layer": "relu", "channel": FACE})
    for page in (layer, neuron):
        assert page.status_code == 200
        assert "data-count" not in page.text and 'class="rlabel"' not in page.text
    assert 'id="typical"' not in neuron.text and 'id="responses"' not in neuron.text
    assert _responses(web, web.off, FACE).text.strip() == ""  # the placeholder goes away
    assert 'id="c0"' in layer.text  # the rest of the page is there
    query = {"layer": "relu", "channel": FACE, "rank": 1}
    missing = web.api.get(f"/ui/typical/{web.off}.png", params=query)
    assert missing.status_code == 400 and "RESPONSES_NOT_KEPT" in missing.text
    beyond = web.api.get(f"/ui/typical/{web.scan}.png", params={**query, "rank": K + 1})
    assert beyond.status_code == 400 and "RANK_OUT_OF_RANGE" in beyond.text


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("quantile", "k"), [(0.5, None), (0.9, 3), (0.0, 2)])
def test_the_quantile_document_of_the_api_equals_the_clis(
    web: Web, capsys: pytest.CaptureFixture[str], quantile: float, k: int | None
) -> None:
    argv = ["--server", web.client.server, "neuron", web.scan, "relu", str(FACE)]
    argv += ["--quantile", str(quantile)] + (["-k", str(k)] if k else [])
    expected = _cli_json(capsys, *argv)
    query: dict[str, Any] = {"layer": "relu", "channel": FACE, "quantile": quantile}
    if k:
        query["k"] = k
    answer = web.api.get(f"/api/v1/scans/{web.scan}/neurons", params=query)
    assert answer.status_code == 200 and answer.json() == expected


def test_the_exported_matrix_and_ids_equal_the_clis_responses_out(
    web: Web, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, ids = tmp_path / "cli.npy", tmp_path / "cli.txt"
    argv = ["--server", web.client.server, "responses", web.scan, "relu"]
    assert main([*argv, "--out", str(out), "--ids", str(ids)]) == 0
    answer = web.api.get(f"/api/v1/scans/{web.scan}/responses", params={"layer": "relu"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    (tmp_path / "api.npy").write_bytes(answer.content)
    loaded = np.load(tmp_path / "api.npy")
    assert loaded.dtype == np.float32 and loaded.shape == (36, 8)
    np.testing.assert_array_equal(loaded, np.load(out))
    np.testing.assert_allclose(loaded, oracle_matrix(web.data_root, "relu"), atol=1e-6)
    assert answer.content == out.read_bytes()
    listed = web.api.get(f"/api/v1/scans/{web.scan}/responses/ids", params={"layer": "relu"})
    assert listed.status_code == 200 and listed.text == ids.read_text()


def test_export_of_a_scan_without_responses_is_responses_not_kept_and_the_server_serves_on(
    web: Web,
) -> None:
    for route in ("responses", "responses/ids"):
        refused = web.api.get(f"/api/v1/scans/{web.off}/{route}", params={"layer": "relu"})
        assert refused.status_code == 400
        assert refused.json()["error"]["reason"] == "RESPONSES_NOT_KEPT"
    unknown = web.api.get(f"/api/v1/scans/{web.scan}/responses", params={"layer": "nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["reason"] == "LAYER_NOT_FOUND"
    bad = web.api.post(
        "/api/v1/scans",
        json={"model": "faces", "layers": ["relu"], "dataset": "faces", "responses": "maybe"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["reason"] == "INVALID_FIELD"
    assert web.api.get(f"/api/v1/scans/{web.scan}").status_code == 200


def test_scans_created_over_http_keep_responses_as_asked(web: Web) -> None:
    kept = web.api.get(f"/api/v1/scans/{web.scan}/labels", params={"layer": "relu"})
    assert kept.status_code == 200
    refused = web.api.get(f"/api/v1/scans/{web.off}/labels", params={"layer": "relu"})
    assert refused.json()["error"]["reason"] == "RESPONSES_NOT_KEPT"
