"""CLI rough edges of issue 19 through the real server: the positional channel of `topk`, one
number for --mean/--std, `rf --unit` without the intervals, a closed pipe, both boxes in the
mask table, the default-preprocessing warning before the work, `confusable` with two classes,
`layers --size` at a size the model cannot take, and the mode of uploaded files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client
from maxact.client import types as t
from tests.cli_run import run as _run
from tests.cli_run import run_json as _json
from tests.onnx_models import bright_square_model, ocr_like_model, random_cnn, save

LAYER = "conv1"


@pytest.fixture
def world(server: object, model_root: Path, data_root: Path) -> str:
    """squares (no sidecar: default preprocessing), early (random_cnn 96 px), ocr (wants
    multiples of 32); datasets `squares` (3 images), `two` and `three` (class folders)."""
    save(bright_square_model(64), model_root, "squares")
    save(random_cnn(size=96), model_root, "early")
    save(ocr_like_model(), model_root, "ocr")
    squares = data_root / "squares"
    squares.mkdir()
    for i, (y, x) in enumerate([(10, 20), (30, 40), (0, 60)]):
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        pixels[y : y + 4, x : x + 4] = 250 - 40 * i
        Image.fromarray(pixels).save(squares / f"img_{i}.png")
    rng = np.random.default_rng(0)
    for dataset, classes in (("two", ("dark", "light")), ("three", ("dark", "light", "mid"))):
        for level, name in zip((30, 220, 120), classes, strict=False):
            folder = data_root / dataset / name
            folder.mkdir(parents=True)
            for i in range(4):
                noise = rng.integers(0, 30, (64, 64, 3))
                Image.fromarray((level + noise).clip(0, 255).astype(np.uint8)).save(
                    folder / f"{i}.png"
                )
    return server.address  # type: ignore[attr-defined]


def test_topk_takes_the_channel_as_positional_like_neuron(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    common = ("--server", world, "topk", "squares", LAYER)
    positional = _json(capsys, *common, "1", "--dataset", "squares", "--json")
    flag = _json(capsys, *common, "--channel", "1", "--dataset", "squares", "--json")
    assert positional["channel"] == 1 and positional["results"] == flag["results"]
    code, _, err = _run(capsys, *common, "0", "--channel", "1", "--dataset", "squares")
    assert code == 2 and "two different channels" in err
    code, _, err = _run(capsys, *common, "--dataset", "squares")
    assert code == 2 and "needs a channel" in err


def test_mean_and_std_take_one_number_for_every_channel(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    common = ("--server", world, "topk", "squares", LAYER, "0", "--dataset", "squares", "--json")
    one = _json(capsys, *common, "--scale", "1/255", "--mean", "0.5", "--std", "0.25")
    three = _json(
        capsys, *common, "--scale", "1/255", "--mean", "0.5", "0.5", "0.5", "--std", *["0.25"] * 3
    )
    assert one["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert one["preprocessing"]["std"] == [0.25, 0.25, 0.25]
    assert one["results"] == three["results"]
    code, _, err = _run(capsys, *common, "--mean", "0.5", "0.5")
    assert code == 2 and "--mean takes one number (all channels) or three, got 2" in err
    code, out, err = _run(
        capsys, "--server", world, "scan", "create", "squares", "--layers", LAYER,
        "--dataset", "squares", "--std", "2", "--wait", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["preprocessing"]["std"] == [2, 2, 2]


def test_rf_of_one_unit_leaves_the_intervals_out_unless_asked(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    common = ("--server", world, "rf", "early", "conv_a", "--json")
    code, out, _ = _run(capsys, *common, "--unit", "3", "4")
    doc = json.loads(out)
    assert code == 0 and doc["box"] == [2, 3, 5, 6]
    assert "rows" not in doc and "cols" not in doc
    assert all("rows" not in group for group in doc["channel_groups"])
    assert len(out.splitlines()) < 80
    full = _json(capsys, *common, "--unit", "3", "4", "--intervals")
    assert len(full["rows"]) == 96 and full["box"] == doc["box"]
    assert len(_json(capsys, *common)["rows"]) == 96  # the layer's document keeps them


def test_a_closed_pipe_ends_the_command_quietly(world: str) -> None:
    command = [sys.executable, "-m", "maxact.client.cli.main", "--server", world]
    process = subprocess.Popen(
        [*command, "rf", "early", "conv_a", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()  # the reader leaves before a byte is written, as `| head` may
    _, err = process.communicate(timeout=120)
    assert err.decode() == ""
    assert process.returncode == 128 + signal.SIGPIPE


def test_topk_mask_table_shows_the_rf_box_and_the_mask_box_labelled(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    common = ("--server", world, "topk", "squares", "pool1", "0", "--dataset", "squares")
    doc = _json(capsys, *common, "--render", "mask", "--json")
    code, out, _ = _run(capsys, *common, "--render", "mask")
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("RANK"))
    assert "RF BOX (ORIGINAL PX)" in header and "MASK BOX" in header
    for result in doc["results"]:
        row = next(line for line in lines if line.startswith(f"#{result['rank']} "))
        (ry0, rx0, ry1, rx1), (my0, mx0, my1, mx1) = result["rf_box"], result["box"]
        rf_text, mask_text = f"[{ry0}:{ry1}, {rx0}:{rx1}]", f"[{my0}:{my1}, {mx0}:{mx1}]"
        assert rf_text in row and mask_text in row and row.index(rf_text) < row.rindex(mask_text)
    assert any(r["rf_box"] != r["box"] for r in doc["results"])  # two different boxes
    code, out, _ = _run(capsys, *common)
    assert "MASK BOX" not in out and "BOX (ORIGINAL PX)" in out


def test_default_preprocessing_warning_arrives_before_the_first_image(
    world: str, client: Client, capsys
) -> None:  # type: ignore[no-untyped-def]
    with client.topk("squares", LAYER, 0, dataset="squares") as stream:
        events = list(stream)
    first = events[0]
    assert isinstance(first, t.Progress) and first.images_done == 0
    assert "default" in first.preprocessing_warning
    assert not any(isinstance(e, t.Progress) and e.preprocessing_warning for e in events[1:])
    code, _, err = _run(capsys, "--server", world, "topk", "squares", LAYER, "0", "--dataset",
                        "squares")  # fmt: skip
    assert code == 0 and err.count("maxact: warning:") == 1
    warning_at = err.index("maxact: warning:")
    assert "3/3" not in err[:warning_at]  # printed before the progress reached the end


def _scan(capsys: pytest.CaptureFixture[str], world: str, dataset: str) -> str:
    doc = _json(
        capsys, "--server", world, "scan", "create", "squares", "--layers", "pool1",
        "--dataset", dataset, "--scale", "1/255", "--wait", "--json",
    )  # fmt: skip
    return str(doc["id"])


def test_confusable_needs_three_classes_and_says_so(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    two = _scan(capsys, world, "two")
    doc = _json(capsys, "--server", world, "classes", two, "pool1", "--json")
    assert [c["name"] for c in doc["classes"]] == ["dark", "light"] and doc["confusable"] == []
    code, out, _ = _run(capsys, "--server", world, "classes", two, "pool1")
    assert code == 0 and "needs at least three classes" in out
    three = _scan(capsys, world, "three")
    doc = _json(capsys, "--server", world, "classes", three, "pool1", "--json")
    assert len(doc["confusable"]) == 3  # every pair of three classes
    code, out, _ = _run(capsys, "--server", world, "classes", three, "pool1")
    assert "needs at least three" not in out and "most confusable classes:" in out


def test_layers_at_a_size_the_model_cannot_take_names_the_size_multiple(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _run(capsys, "--server", world, "layers", "ocr", "--size", "300", "451")
    assert code == 1 and out == ""
    assert "INPUT_SIZE_UNSUPPORTED" in err and "--size-multiple 32" in err and "300x451" in err
    doc = _json(capsys, "--server", world, "layers", "ocr", "--size", "320", "448", "--json")
    assert all(layer["shape"] for layer in doc["layers"])


@pytest.fixture
def umask_027() -> Iterator[None]:
    saved = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(saved)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_uploaded_model_and_sidecar_get_the_umask_mode_like_copied_files(
    world: str, client: Client, model_root: Path, net_file: Path, umask_027: None
) -> None:
    client.upload_model(net_file, "uploaded", preprocess_json='{"scale": 0.5}')
    copied = model_root / "copied.onnx"
    with copied.open("wb") as handle:
        handle.write(net_file.read_bytes())
    expected = copied.stat().st_mode & 0o777
    assert expected == 0o640
    assert (model_root / "uploaded.onnx").stat().st_mode & 0o777 == expected
    assert (model_root / "uploaded.preprocess.json").stat().st_mode & 0o777 == expected
