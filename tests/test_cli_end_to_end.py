"""The `maxact` CLI against a real in-process server: JSON documents as docs/cli.md specifies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client.cli.main import main
from tests.onnx_models import bright_square_model, save


@pytest.fixture
def cli_world(server: object, model_root: Path, data_root: Path) -> str:
    save(bright_square_model(64), model_root, "zoo/squares")
    dataset = data_root / "squares"
    dataset.mkdir()
    for i, (y, x) in enumerate([(10, 20), (30, 40), (0, 60)]):
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        pixels[y : y + 4, x : x + 4] = 250 - 40 * i
        Image.fromarray(pixels).save(dataset / f"img_{i}.png")
    return server.address  # type: ignore[attr-defined]


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def _topk_conv1(address: str, channel: int, *flags: str) -> list[str]:
    """The argv of `topk zoo/squares conv1 --channel CHANNEL --dataset squares --json [FLAGS]`."""
    command = ["topk", "zoo/squares", "conv1", "--channel", str(channel), "--dataset", "squares"]
    return ["--server", address, *command, "--json", *flags]


def test_models_json_lists_models_by_relative_name(cli_world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    document = _json(capsys, "--server", cli_world, "models", "--json")
    names = [m["name"] for m in document["models"]]
    assert names == ["zoo/squares"]


def test_layers_json_has_ops_shapes_fields_and_global_context(cli_world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    document = _json(capsys, "--server", cli_world, "layers", "zoo/squares", "--json")
    assert document["model"] == "zoo/squares"
    layers = {layer["name"]: layer for layer in document["layers"]}
    assert layers["conv1"]["op"] == "Conv"
    assert layers["conv1"]["shape"] == [2, 31, 31]
    assert layers["conv1"]["rf"]["size"] == [4, 4]
    assert layers["pool1"]["rf"] == {"size": [6, 6], "stride": [4, 4], "padding": [0, 0]}
    assert layers["pool1"]["global_context"] is False
    # a flat tensor's field is the whole 64x64 input, through a global path
    assert layers["features"]["shape"] == [2]
    assert layers["features"]["rf"]["size"] == [64, 64]
    assert layers["features"]["global_context"] is True


def test_rf_json_with_unit_gives_exact_and_formula_boxes(cli_world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    document = _json(
        capsys, "--server", cli_world, "rf", "zoo/squares", "pool1", "--unit", "2", "5", "--json"
    )
    assert document["input"] == {"name": "image", "height": 64, "width": 64}
    assert document["shape"] == [2, 15, 15]
    assert document["rf"] == {"size": [6, 6], "stride": [4, 4], "padding": [0, 0]}
    assert document["box"] == [8, 20, 14, 26]
    assert document["box_unclipped"] == [8, 20, 14, 26]
    assert "rows" not in document  # one unit's document: its box, no intervals unless asked
    with_intervals = _json(
        capsys, "--server", cli_world, "rf", "zoo/squares", "pool1", "--unit", "2", "5", "--json",
        "--intervals",
    )  # fmt: skip
    assert with_intervals["rows"][2] == [8, 14]
    assert document["global_context"] is False
    assert document["channel_groups"][0]["channels"] == [0, 1]


def test_topk_json_and_out_folder_write_patches_and_montage(
    cli_world: str,
    capsys,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    out = tmp_path / "out"
    document = _json(capsys, *_topk_conv1(cli_world, 0, "-k", "2", "--out", str(out)))
    assert document["model"] == "zoo/squares" and document["layer"] == "conv1"
    assert document["channel"] == 0 and document["k"] == 2 and document["mode"] == "image"
    assert document["images_scanned"] == 3
    results = document["results"]
    assert [r["rank"] for r in results] == [1, 2]
    assert [r["image"] for r in results] == ["img_0.png", "img_1.png"]
    assert [r["unit"] for r in results] == [[5, 10], [15, 20]]
    assert [r["box"] for r in results] == [[10, 20, 14, 24], [30, 40, 34, 44]]
    for result in results:
        assert (out / result["patch"]).is_file()
    assert Image.open(out / "montage.png").width > 0


def test_cli_reports_server_errors_on_stderr_with_nonzero_exit(cli_world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(_topk_conv1(cli_world, 7))
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "CHANNEL_OUT_OF_RANGE" in captured.err and "conv1" in captured.err
