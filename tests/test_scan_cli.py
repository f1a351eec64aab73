"""`maxact scan create|get|watch|cancel|list` and `maxact neuron` against the real in-process
server: the JSON documents of docs/cli.md, exit codes, and `neuron` == `topk` for the same data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client
from tests.cli_run import run as _run
from tests.cli_run import run_json as _json
from tests.datasets import slow_scan
from tests.onnx_models import bright_square_model, save

SCAN_KEYS = {"id", "state", "images_done", "images_total", "model", "layers", "dataset"}


@pytest.fixture
def world(server: object, model_root: Path, data_root: Path) -> str:
    """Model `zoo/squares` and dataset `labelled` (class folders, 12 images)."""
    save(bright_square_model(64), model_root, "zoo/squares")
    rng = np.random.default_rng(5)
    for i in range(12):
        label = "bright" if i % 3 else "dark"
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        y, x = 2 * rng.integers(0, 30, size=2)
        pixels[y : y + 4, x : x + 4] = 120 + 10 * i if label == "bright" else 5 + i
        path = data_root / "labelled" / label / f"img_{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    return server.address  # type: ignore[attr-defined]


def _create(address: str, *layers_then_flags: str) -> list[str]:
    """The argv of `scan create zoo/squares --dataset labelled --layers LAYERS [FLAGS]`."""
    command = ["scan", "create", "zoo/squares", "--dataset", "labelled", "--layers"]
    return ["--server", address, *command, *layers_then_flags]


def _create_finished(capsys: pytest.CaptureFixture[str], address: str, *extra: str) -> dict:
    return _json(capsys, *_create(address, "conv1", "pool1", "-k", "4", "--wait", "--json", *extra))


def test_scan_create_wait_json_prints_the_finished_scan_document(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    doc = _create_finished(capsys, world)
    assert set(doc) >= SCAN_KEYS
    assert doc["state"] == "succeeded"
    assert (doc["images_done"], doc["images_total"]) == (12, 12)
    assert (doc["model"], doc["layers"], doc["dataset"]) == (
        "zoo/squares",
        ["conv1", "pool1"],
        "labelled",
    )
    assert doc["k"] == 4 and doc["mode"] == "image"


def test_scan_create_without_wait_prints_the_bare_id_at_once(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _run(capsys, *_create(world, "conv1"))
    scan_id = out.strip()
    assert code == 0 and scan_id and "\n" not in scan_id and "/" not in scan_id
    with Client(world) as client:
        assert [s.state for s in client.scans.watch(scan_id)][-1] == "succeeded"


def test_scan_get_watch_and_list_agree_on_a_finished_scan(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    created = _create_finished(capsys, world)
    got = _json(capsys, "--server", world, "scan", "get", created["id"], "--json")
    assert got == created
    watched = _json(capsys, "--server", world, "scan", "watch", created["id"], "--json")
    assert watched == created
    listed = _json(capsys, "--server", world, "scan", "list", "--json")
    assert created["id"] in [s["id"] for s in listed["scans"]]
    assert next(s for s in listed["scans"] if s["id"] == created["id"]) == created
    # the human forms are short tables / key-value lines naming the scan
    code, text, _ = _run(capsys, "--server", world, "scan", "list")
    assert code == 0 and text.startswith("ID") and created["id"] in text
    code, text, _ = _run(capsys, "--server", world, "scan", "get", created["id"])
    assert code == 0 and "succeeded" in text and "conv1 pool1" in text


def test_scan_create_wait_progress_goes_to_stderr_and_stdout_stays_one_document(
    world: str,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    code, out, err = _run(capsys, *_create(world, "relu1", "--wait", "--json"))
    assert code == 0
    assert json.loads(out)["state"] == "succeeded"  # nothing but the document on stdout
    assert "12/12 images" in err


def test_scan_cancel_json_ends_a_running_scan_and_watch_exits_nonzero(
    server: object,
    model_root: Path,
    data_root: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    address = server.address  # type: ignore[attr-defined]
    slow_scan(model_root, data_root, 200)
    created = _json(
        capsys,
        "--server",
        address,
        "scan",
        "create",
        "heavy",
        "--layers",
        "relu5",
        "--dataset",
        "many",
        "-k",
        "3",
        "--json",
    )
    assert created["state"] in ("queued", "running")
    cancelled = _json(capsys, "--server", address, "scan", "cancel", created["id"], "--json")
    assert cancelled["id"] == created["id"] and cancelled["state"] == "cancelled"
    code, out, err = _run(capsys, "--server", address, "scan", "watch", created["id"], "--json")
    assert code == 1 and json.loads(out)["state"] == "cancelled"
    assert f"scan {created['id']} cancelled" in err
    code, _, err = _run(capsys, "--server", address, "neuron", created["id"], "relu5", "0")
    assert code == 1 and "SCAN_NOT_FINISHED" in err
    deleted = _json(capsys, "--server", address, "scan", "delete", created["id"], "--json")
    assert deleted == {"id": created["id"], "deleted": True}
    code, _, err = _run(capsys, "--server", address, "scan", "get", created["id"])
    assert code == 1 and "SCAN_NOT_FOUND" in err


def test_neuron_json_and_out_equal_topk_for_the_same_dataset(
    world: str,
    capsys,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    scan = _create_finished(capsys, world)
    for layer, channel, extra in [("conv1", 0, ()), ("pool1", 0, ()), ("conv1", 1, ("--bottom",))]:
        neuron_out = tmp_path / f"neuron-{layer}-{channel}"
        topk_out = tmp_path / f"topk-{layer}-{channel}"
        neuron = _json(
            capsys,
            "--server",
            world,
            "neuron",
            scan["id"],
            layer,
            str(channel),
            "-k",
            "4",
            "--out",
            str(neuron_out),
            "--json",
            *extra,
        )
        topk = _json(
            capsys,
            "--server",
            world,
            "topk",
            "zoo/squares",
            layer,
            "--channel",
            str(channel),
            "-k",
            "4",
            "--dataset",
            "labelled",
            "--out",
            str(topk_out),
            "--json",
            *extra,
        )
        # a neuron of a scan that kept its responses also carries the label they give it
        label = {key: neuron.pop(key) for key in ("label", "label_auc") if key in neuron}
        if (layer, channel) == ("conv1", 0):
            assert label["label"] == "bright" and label["label_auc"] == 1.0
        assert neuron == topk  # every field, patch file names included
        assert len(neuron["results"]) == 4 and neuron["images_scanned"] == 12
        for result in neuron["results"]:
            assert (neuron_out / result["patch"]).read_bytes() == (
                topk_out / result["patch"]
            ).read_bytes()
        assert Image.open(neuron_out / "montage.png").width > 0


def test_neuron_default_k_is_capped_by_what_the_scan_kept(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    scan = _create_finished(capsys, world)  # -k 4 < the default 9
    doc = _json(capsys, "--server", world, "neuron", scan["id"], "conv1", "0", "--json")
    assert doc["k"] == 4 and [r["rank"] for r in doc["results"]] == [1, 2, 3, 4]
    code, text, _ = _run(capsys, "--server", world, "neuron", scan["id"], "conv1", "0")
    assert code == 0 and text.startswith("top-4 of zoo/squares conv1 channel 0")


def test_neuron_bad_channel_and_layer_exit_1_naming_the_reason(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    scan = _create_finished(capsys, world)
    code, out, err = _run(capsys, "--server", world, "neuron", scan["id"], "conv1", "7", "--json")
    assert code == 1 and out == "" and "INVALID_ARGUMENT" in err
    code, _, err = _run(capsys, "--server", world, "neuron", scan["id"], "relu1", "0")
    assert code == 1 and "LAYER_NOT_FOUND" in err
