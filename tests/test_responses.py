"""Per-image responses through the real server, client and CLI, against an independent
computation: plain onnxruntime for the matrix, numpy / scipy / scikit-learn for histogram,
quantile examples, labels and similar channels (tests/responses_world.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from maxact.client import Client, MaxactError
from maxact.client.cli.main import main
from maxact.server.app import start_server
from tests.responses_world import (
    CHANNELS,
    CONSTANT,
    FACE,
    LAYERS,
    dataset_order,
    oracle_histogram,
    oracle_label,
    oracle_matrix,
    oracle_quantile,
    oracle_similar,
    write_world,
)

K = 5


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Client, str, Path]]:
    """A server, a client, a finished scan of both layers with responses kept (the
    default), the data root."""
    root = tmp_path_factory.mktemp("responses")
    model_root, data_root = root / "models", root / "data"
    write_world(model_root, data_root)
    server = start_server(model_root, data_root, port=0, device="cpu")
    try:
        with Client(server.address, timeout=120) as client:
            scan = client.scans.create("faces", list(LAYERS), "faces", k=K)
            assert [i.state for i in client.scans.watch(scan.id)][-1] == "succeeded"
            yield server, client, scan.id, data_root
    finally:
        server.stop()


@pytest.fixture(scope="module")
def world(served: tuple[Any, Client, str, Path]) -> tuple[Client, str, Path]:
    return served[1:]


def _exported(client: Client, scan_id: str, layer: str, tmp_path: Path) -> np.ndarray:
    client.responses.export(scan_id, layer, tmp_path / "r.npy", tmp_path / "ids.txt")
    return np.load(tmp_path / "r.npy")


@pytest.mark.parametrize("layer", LAYERS)
def test_the_kept_matrix_equals_plain_onnxruntime_per_image_maxima_in_dataset_order(
    world: tuple[Client, str, Path], layer: str, tmp_path: Path
) -> None:
    client, scan_id, data_root = world
    matrix = _exported(client, scan_id, layer, tmp_path)
    expected = oracle_matrix(data_root, layer)
    assert matrix.dtype == np.float32 and matrix.shape == expected.shape
    np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-6)
    ids, _ = dataset_order(data_root)
    assert (tmp_path / "ids.txt").read_text().splitlines() == ids


def test_the_cli_writes_the_matrix_and_the_ids(
    world: tuple[Client, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, scan_id, data_root = world
    out, ids = tmp_path / "m.npy", tmp_path / "m.txt"
    argv = ["--server", client.server, "responses", scan_id, "relu", "--out", str(out)]
    assert main([*argv, "--ids", str(ids)]) == 0
    assert "36 images x 8 channels" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(out), oracle_matrix(data_root, "relu"), atol=1e-6)
    assert ids.read_text().splitlines() == dataset_order(data_root)[0]


@pytest.mark.parametrize("channel", [FACE, CONSTANT, 2, 5])
def test_histogram_counts_and_edges_follow_numpy_over_the_channel(
    world: tuple[Client, str, Path], channel: int, tmp_path: Path
) -> None:
    client, scan_id, _ = world
    matrix = _exported(client, scan_id, "relu", tmp_path)
    found = client.responses.histogram(scan_id, "relu", channel, bins=7)
    edges, counts = oracle_histogram(matrix[:, channel], 7)
    np.testing.assert_allclose(found.edges, edges, rtol=1e-12)
    assert list(found.counts) == counts and sum(found.counts) == len(matrix)


@pytest.mark.parametrize(("channel", "quantile"), [(FACE, 0.5), (2, 0.25), (5, 0.9), (3, 0.0)])
def test_quantile_examples_are_the_images_nearest_the_quantile_earlier_first(
    world: tuple[Client, str, Path], channel: int, quantile: float, tmp_path: Path
) -> None:
    client, scan_id, data_root = world
    matrix = _exported(client, scan_id, "relu", tmp_path)
    found = client.responses.quantile(scan_id, "relu", channel, quantile, k=6)
    value, nearest = oracle_quantile(matrix[:, channel], quantile, 6)
    ids, _ = dataset_order(data_root)
    assert found.value == pytest.approx(value, rel=1e-12)
    assert [e.image for e in found.examples] == [ids[i] for i in nearest]
    assert [e.rank for e in found.examples] == list(range(1, 7))


def test_relu_zeros_tie_and_the_quantile_examples_take_the_earliest_images(
    world: tuple[Client, str, Path], tmp_path: Path
) -> None:
    """The face channel is 0 for every non-face image: its median is 0, a tie of 24."""
    client, scan_id, data_root = world
    matrix = _exported(client, scan_id, "relu", tmp_path)
    zeros = np.flatnonzero(matrix[:, FACE] == 0)
    assert len(zeros) >= 6
    found = client.responses.quantile(scan_id, "relu", FACE, 0.1, k=6)
    ids, _ = dataset_order(data_root)
    assert [e.image for e in found.examples] == [ids[i] for i in zeros[:6]]


@pytest.mark.parametrize("layer", LAYERS)
def test_labels_equal_scikit_learn_auc_scipy_mann_whitney_and_top_k_purity(
    world: tuple[Client, str, Path], layer: str, tmp_path: Path
) -> None:
    client, scan_id, data_root = world
    matrix = _exported(client, scan_id, layer, tmp_path)
    _, labels = dataset_order(data_root)
    found = client.responses.labels(scan_id, layer)
    assert [f.channel for f in found] == list(range(CHANNELS))
    for answer in found:
        label, auc, p_value, purity = oracle_label(matrix[:, answer.channel], labels, K)
        if answer.channel != CONSTANT:
            assert answer.label == label, answer
        assert answer.auc == pytest.approx(auc, abs=1e-12)
        assert answer.p_value == pytest.approx(p_value, rel=1e-9, abs=1e-300)
        assert answer.purity == pytest.approx(purity)


def test_the_planted_face_detector_is_labelled_face_and_the_constant_channel_is_not(
    world: tuple[Client, str, Path],
) -> None:
    client, scan_id, _ = world
    found = {f.channel: f for f in client.responses.labels(scan_id, "relu")}
    face = found[FACE]
    assert (face.label, face.shown) == ("face", True)
    assert face.auc > 0.99 and face.purity == 1.0 and face.p_value < 1e-6
    constant = found[CONSTANT]
    assert constant.label == "" and not constant.shown and constant.auc == 0.5


@pytest.mark.parametrize("channel", [FACE, 2, 4, 7])
def test_similar_channels_are_the_most_pearson_correlated_lower_channel_first(
    world: tuple[Client, str, Path], channel: int, tmp_path: Path
) -> None:
    client, scan_id, _ = world
    matrix = _exported(client, scan_id, "conv", tmp_path)
    found = client.responses.similar(scan_id, "conv", channel, top=4)
    expected = oracle_similar(matrix, channel, 4)
    assert [s.channel for s in found] == [c for c, _ in expected]
    np.testing.assert_allclose([s.correlation for s in found], [r for _, r in expected], atol=1e-9)
    assert CONSTANT not in [s.channel for s in found]


def test_a_constant_channel_has_no_similar_channels(world: tuple[Client, str, Path]) -> None:
    client, scan_id, _ = world
    assert client.responses.similar(scan_id, "relu", CONSTANT) == []


def test_cli_documents_of_histogram_labels_similar_and_neuron_quantile(
    world: tuple[Client, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    client, scan_id, _ = world
    server = ["--server", client.server]

    def doc(*argv: str) -> dict[str, Any]:
        capsys.readouterr()
        assert main([*server, *argv, "--json"]) == 0
        document: dict[str, Any] = json.loads(capsys.readouterr().out)
        return document

    histogram = doc("histogram", scan_id, "relu", str(FACE), "--bins", "4")
    assert set(histogram) == {"scan", "layer", "channel", "edges", "counts"}
    assert len(histogram["edges"]) == 5 and sum(histogram["counts"]) == 36
    labels = doc("labels", scan_id, "relu")
    assert labels["scan"] == scan_id and labels["layer"] == "relu"
    face = labels["channels"][FACE]
    assert set(face) == {"channel", "label", "auc", "p_value", "purity"}
    assert face["label"] == "face" and labels["channels"][CONSTANT]["label"] is None
    similar = doc("similar", scan_id, "relu", "--channel", "2", "--top", "3")
    assert similar["channel"] == 2 and len(similar["similar"]) == 3
    assert set(similar["similar"][0]) == {"channel", "correlation"}
    quantile = doc("neuron", scan_id, "relu", str(FACE), "--quantile", "0.95", "-k", "3")
    assert quantile["quantile"] == 0.95 and len(quantile["results"]) == 3
    assert {"rank", "image", "score"} <= set(quantile["results"][0])


def test_neuron_shows_the_label_of_a_channel_with_auc_at_least_0_75(
    world: tuple[Client, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    client, scan_id, _ = world
    server = ["--server", client.server]
    capsys.readouterr()
    assert main([*server, "neuron", scan_id, "relu", str(FACE), "--json"]) == 0
    face = json.loads(capsys.readouterr().out)
    assert face["label"] == "face" and face["label_auc"] > 0.99
    assert main([*server, "neuron", scan_id, "relu", str(CONSTANT), "--json"]) == 0
    assert "label" not in json.loads(capsys.readouterr().out)


def test_bad_channel_bins_quantile_and_layer_are_invalid_arguments(
    world: tuple[Client, str, Path],
) -> None:
    client, scan_id, _ = world
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: client.responses.histogram(scan_id, "relu", CHANNELS), "CHANNEL_OUT_OF_RANGE"),
        (lambda: client.responses.histogram(scan_id, "relu", 0, bins=-1), "BINS_OUT_OF_RANGE"),
        (lambda: client.responses.quantile(scan_id, "relu", 0, 1.5), "QUANTILE_OUT_OF_RANGE"),
        (lambda: client.responses.similar(scan_id, "nope", 0), "LAYER_NOT_FOUND"),
        (lambda: client.responses.labels(scan_id, "relu", [99]), "CHANNEL_OUT_OF_RANGE"),
    ]
    for call, reason in calls:
        with pytest.raises(MaxactError) as error:
            call()
        assert (error.value.code, error.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
        assert len(client.responses.labels(scan_id, "relu", [FACE])) == 1  # still serving


def test_a_scan_without_responses_answers_responses_not_kept_and_says_how(
    world: tuple[Client, str, Path], tmp_path: Path
) -> None:
    client, _, _ = world
    scan = client.scans.create("faces", ["relu"], "faces", k=K, responses="off")
    assert [i.state for i in client.scans.watch(scan.id)][-1] == "succeeded"
    calls: list[Callable[[], object]] = [
        lambda: client.responses.histogram(scan.id, "relu", 0),
        lambda: client.responses.quantile(scan.id, "relu", 0, 0.5),
        lambda: client.responses.labels(scan.id, "relu"),
        lambda: client.responses.similar(scan.id, "relu", 0),
        lambda: client.responses.export(scan.id, "relu", tmp_path / "x.npy"),
    ]
    for call in calls:
        with pytest.raises(MaxactError) as error:
            call()
        assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.value.reason == "RESPONSES_NOT_KEPT"
        assert "--responses on" in error.value.message
    info, _, _ = client.scans.neuron(scan.id, "relu", FACE)  # the scan itself answers
    assert info.id == scan.id


def test_delete_scan_removes_its_responses(tmp_path: Path) -> None:
    model_root, data_root, store = tmp_path / "m", tmp_path / "d", tmp_path / "s" / "store.db"
    write_world(model_root, data_root, per_class=2)
    server = start_server(model_root, data_root, port=0, device="cpu", store=store)
    try:
        with Client(server.address, timeout=60) as client:
            scan = client.scans.create("faces", ["relu"], "faces", k=2)
            assert [i.state for i in client.scans.watch(scan.id)][-1] == "succeeded"
            folder = store.parent / "responses" / scan.id
            assert (folder / "manifest.json").is_file() and list(folder.glob("*.npy"))
            client.delete_scan(scan.id)
            assert not folder.exists()
    finally:
        server.stop()


def test_the_bound_refuses_responses_on_and_auto_keeps_none_above_it(tmp_path: Path) -> None:
    """6 images x 16 channels x 4 bytes = 384 bytes; the bound is 100 bytes."""
    model_root, data_root = tmp_path / "m", tmp_path / "d"
    write_world(model_root, data_root, per_class=2)
    server = start_server(
        model_root, data_root, port=0, device="cpu", max_responses_mb=100 / 1024 / 1024
    )
    try:
        with Client(server.address, timeout=60) as client:
            with pytest.raises(MaxactError) as error:
                client.scans.create("faces", ["relu", "conv"], "faces", responses="on")
            assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error.value.reason == "RESPONSES_TOO_LARGE"
            assert "--max-responses-mb" in error.value.message
            scan = client.scans.create("faces", ["relu", "conv"], "faces")
            assert [i.state for i in client.scans.watch(scan.id)][-1] == "succeeded"
            with pytest.raises(MaxactError) as error:
                client.responses.labels(scan.id, "relu")
            assert error.value.reason == "RESPONSES_NOT_KEPT"
    finally:
        server.stop()


def test_the_demo_prints_the_labels_of_the_most_face_selective_channels_first(
    world: tuple[Client, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from maxact.client.demo.classes_demo import print_face_labels

    client, scan_id, _ = world
    capsys.readouterr()
    print_face_labels(client, scan_id, "relu")
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"== labels from per-image responses: maxact labels {scan_id} relu"
    assert lines[2].startswith(f"   channel {FACE}: face, AUC 1.000") and "(labelled)" in lines[2]


def test_kept_responses_are_handed_over_in_bounded_blocks_between_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No checkpoint is due (every 10000 images); blocks of 5 images x 8 channels are written
    as the scan goes, and the matrix is still exact."""
    from maxact.server.jobs import shard_work
    from maxact.server.jobs.responses_files import ResponsesFiles

    monkeypatch.setattr(shard_work, "RESPONSES_BLOCK_VALUES", 5 * CHANNELS)
    firsts: list[int] = []
    write = ResponsesFiles.write

    def counted(self: ResponsesFiles, scan: str, layout: object, first: int, blocks: dict) -> None:
        firsts.append(first)
        write(self, scan, layout, first, blocks)  # type: ignore[arg-type]

    monkeypatch.setattr(ResponsesFiles, "write", counted)
    model_root, data_root = tmp_path / "m", tmp_path / "d"
    write_world(model_root, data_root, per_class=20)
    server = start_server(model_root, data_root, port=0, device="cpu", checkpoint_images=10_000)
    try:
        with Client(server.address, timeout=60) as client:
            scan = client.scans.create("faces", ["relu"], "faces", k=2)
            assert [i.state for i in client.scans.watch(scan.id)][-1] == "succeeded"
            matrix = _exported(client, scan.id, "relu", tmp_path)
    finally:
        server.stop()
    np.testing.assert_allclose(matrix, oracle_matrix(data_root, "relu"), atol=1e-6)
    assert len(firsts) > 1 and firsts[0] == 0 and firsts == sorted(firsts), firsts


def test_the_report_shows_labels_beside_channels_with_auc_at_least_0_75(
    world: tuple[Client, str, Path], tmp_path: Path
) -> None:
    from maxact.client.report.writer import write_report

    client, scan_id, _ = world
    write_report(client, scan_id, tmp_path / "report", k=2)
    shown = [f for f in client.responses.labels(scan_id, "relu") if f.shown]
    assert FACE in [f.channel for f in shown] and CONSTANT not in [f.channel for f in shown]
    folders = list((tmp_path / "report" / "layers").iterdir())
    pages = [folder / "index.html" for folder in folders]
    relu = next(p.read_text() for p in pages if "relu" in p.parent.name)
    data = relu.split('id="neuron-data">', 1)[1].split("</script>", 1)[0]
    rows = {row["channel"]: row for row in json.loads(data)}
    for found in shown:
        assert rows[found.channel]["label"] == f"{found.label} (AUC {found.auc:.2f})"
    assert rows[CONSTANT]["label"] == ""
    for channel in (FACE, CONSTANT, 3):
        histogram = client.responses.histogram(scan_id, "relu", channel, 20)
        assert rows[channel]["hist"] == list(histogram.counts)


def test_scan_create_responses_off_on_the_command_line_keeps_none(
    world: tuple[Client, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    client, _, _ = world
    server = ["--server", client.server]
    capsys.readouterr()
    argv = ["scan", "create", "faces", "--layers", "relu", "--dataset", "faces"]
    assert main([*server, *argv, "--responses", "off", "--wait"]) == 0
    scan_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert main([*server, "histogram", scan_id, "relu", "0"]) == 1
    assert "RESPONSES_NOT_KEPT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*server, *argv, "--responses", "maybe"])


def test_the_export_streams_blocks_of_rows_that_reassemble_the_matrix(
    world: tuple[Client, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from maxact.server.core import responses as core

    client, scan_id, data_root = world
    monkeypatch.setattr(core, "EXPORT_VALUES", 5 * CHANNELS)  # blocks of 5 rows: 8 of them
    matrix = _exported(client, scan_id, "relu", tmp_path)
    np.testing.assert_allclose(matrix, oracle_matrix(data_root, "relu"), atol=1e-6)
    assert (tmp_path / "ids.txt").read_text().splitlines() == dataset_order(data_root)[0]


def test_the_http_api_answers_the_cli_documents_and_responses_not_kept(
    served: tuple[Any, Client, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    server, client, scan_id, _ = served
    cli = ["--server", client.server]
    questions = [
        ("histogram", {"layer": "relu", "channel": FACE, "bins": 6}, ["relu", "0", "--bins", "6"]),
        ("labels", {"layer": "relu"}, ["relu"]),
        ("similar", {"layer": "conv", "channel": 2, "top": 3}, ["conv", "2", "--top", "3"]),
    ]
    with httpx.Client(base_url=server.http_url, timeout=60) as api:
        for name, query, argv in questions:
            capsys.readouterr()
            assert main([*cli, name, scan_id, *argv, "--json"]) == 0
            expected = json.loads(capsys.readouterr().out)
            answer = api.get(f"/api/v1/scans/{scan_id}/{name}", params=query)
            assert answer.status_code == 200 and answer.json() == expected, name
        off = client.scans.create("faces", ["relu"], "faces", k=K, responses="off")
        assert [i.state for i in client.scans.watch(off.id)][-1] == "succeeded"
        refused = api.get(f"/api/v1/scans/{off.id}/labels", params={"layer": "relu"})
        assert refused.status_code == 400
        assert refused.json()["error"]["reason"] == "RESPONSES_NOT_KEPT"
