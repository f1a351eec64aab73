"""CLI rough edges a newcomer hits: datasets, models load/unload, neuron --channel, help on
every serve flag, the duplicate-upload hint, a summarised `rf`, a one-line field repr, and a
test run that writes nothing into the home folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from maxact.client import Client
from maxact.client.cli.main import build_parser, main
from tests.onnx_models import bright_square_model, random_cnn, save


@pytest.fixture
def world(server: object, model_root: Path, data_root: Path) -> str:
    save(bright_square_model(64), model_root, "squares")
    save(random_cnn(size=96), model_root, "early")
    for name, count in (("few", 2), ("more", 3)):
        folder = data_root / name
        folder.mkdir()
        for i in range(count):
            Image.fromarray(np.full((64, 64, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return server.address  # type: ignore[attr-defined]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_datasets_lists_names_and_image_counts_as_text_and_json(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _run(capsys, "--server", world, "datasets", "--json")
    assert code == 0
    doc = json.loads(out)
    assert {(d["name"], d["image_count"]) for d in doc["datasets"]} == {("few", 2), ("more", 3)}
    code, out, _ = _run(capsys, "--server", world, "datasets")
    assert code == 0 and out.splitlines()[0].split() == ["DATASET", "IMAGES", "SIZE", "LABELS"]


def test_models_load_and_unload_change_the_loaded_flag(world: str, capsys) -> None:  # type: ignore[no-untyped-def]
    def loaded() -> bool:
        _, out, _ = _run(capsys, "--server", world, "models", "--json")
        return next(m["loaded"] for m in json.loads(out)["models"] if m["name"] == "squares")

    assert _run(capsys, "--server", world, "models", "load", "squares")[0] == 0
    assert loaded() is True
    code, out, _ = _run(capsys, "--server", world, "models", "unload", "squares", "--json")
    assert code == 0 and json.loads(out) == {"name": "squares", "loaded": False}
    assert loaded() is False
    code, _, err = _run(capsys, "--server", world, "models", "load", "nope")
    assert code == 1 and "MODEL_NOT_FOUND" in err


def test_neuron_accepts_the_channel_as_positional_or_flag_but_not_two_different() -> None:
    parser = build_parser()
    positional = parser.parse_args(["neuron", "s", "L", "3"])
    flag = parser.parse_args(["neuron", "s", "L", "--channel", "3"])
    from maxact.client.cli.scan_commands import neuron_channel

    assert neuron_channel(positional) == neuron_channel(flag) == 3
    with pytest.raises(ValueError, match="two different channels"):
        neuron_channel(parser.parse_args(["neuron", "s", "L", "3", "--channel", "4"]))
    with pytest.raises(ValueError, match="needs a channel"):
        neuron_channel(parser.parse_args(["neuron", "s", "L"]))


def test_every_serve_flag_and_every_mode_option_has_help() -> None:
    from maxact.server.serve_flags import serve_parser

    parser = serve_parser()  # the parser `maxact serve` builds
    missing = [
        action.option_strings
        for action in parser._actions
        if action.option_strings
        and action.dest != "help"
        and not (action.help or "").split("[env ")[0].strip()
    ]
    assert missing == []
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("topk",):
        mode = next(a for a in commands[name]._actions if a.dest == "mode")
        assert mode.help and "position" in mode.help
    scan_create = commands["scan"]._subparsers._group_actions[0].choices["create"]
    assert next(a for a in scan_create._actions if a.dest == "mode").help


def test_a_duplicate_upload_names_the_overwrite_flag(world: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "squares.onnx"
    onnx.save(bright_square_model(64), str(path))
    code, _, err = _run(capsys, "--server", world, "upload", str(path))
    assert code == 1 and "ALREADY_EXISTS" in err and "--overwrite" in err
    assert _run(capsys, "--server", world, "upload", str(path), "--overwrite")[0] == 0


def test_rf_text_of_an_early_layer_is_a_short_summary_and_json_keeps_every_interval(
    world: str,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    code, out, _ = _run(capsys, "--server", world, "rf", "early", "conv_a")
    assert code == 0 and len(out.splitlines()) <= 12
    assert "units   96x96" in out
    code, out, _ = _run(capsys, "--server", world, "rf", "early", "conv_a", "--json")
    assert code == 0 and len(out.splitlines()) > 96  # every unit row and column


def test_receptive_field_repr_is_one_short_line(client: Client, model_root: Path) -> None:
    save(random_cnn(size=96), model_root, "early")
    field = client.get_model("early").layer("conv_a").receptive_field
    text = repr(field)
    assert "\n" not in text and len(text) < 300
    assert "96 intervals" in text and "size=(3.0, 3.0)" in text


def test_the_suite_keeps_the_scan_store_out_of_the_home_folder() -> None:
    from maxact.server.settings import default_store_path

    store = default_store_path()
    assert not store.is_relative_to(Path.home() / ".local")
    assert os.environ["XDG_STATE_HOME"] and store.is_relative_to(os.environ["XDG_STATE_HOME"])
