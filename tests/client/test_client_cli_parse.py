"""Every command parses as README.md and docs/cli.md document it; bad usage exits 2 with
`maxact: error:`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from maxact.client.cli import main as cli


def parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def parse_serve(*argv: str):
    """`maxact serve ARGS`: the client hands ARGS to the server's parser, the one place that
    declares the serve flags."""
    from maxact.server import app

    return app.parse_args(cli.serve_argv(["serve", *argv]))


def test_global_server_flag_precedes_the_command() -> None:
    args = parse("--server", "host:1234", "models")
    assert args.server == "host:1234" and args.command == "models" and not args.json


def test_server_defaults_to_none_so_the_client_reads_the_environment() -> None:
    assert parse("models").server is None


def test_serve_parses_every_documented_flag() -> None:
    args = parse_serve(
        "--host", "0.0.0.0", "--port", "0", "--model-root", "M", "--data-root", "D",
        "--store", "s.db", "--device", "cpu", "--auth-token-file", "tok",
        "--tls-cert", "c.pem", "--tls-key", "k.pem",
    )  # fmt: skip
    assert (args.host, args.port, args.model_root, args.data_root) == (
        "0.0.0.0", 0, Path("M"), Path("D"),
    )  # fmt: skip
    assert (args.store, args.device, args.auth_token_file) == (Path("s.db"), "cpu", Path("tok"))
    assert (args.tls_cert, args.tls_key) == (Path("c.pem"), Path("k.pem"))


def test_serve_defaults_match_the_contract() -> None:
    args = parse_serve("--model-root", "M")
    assert (args.host, args.port, args.device) == ("127.0.0.1", 50051, "auto")


def test_serve_forwards_its_arguments_verbatim() -> None:
    argv = ["--server", "serve", "serve", "--model-root", "M", "--port", "0"]
    assert cli.serve_argv(argv) == ["--model-root", "M", "--port", "0"]


def test_models_and_layers_take_json() -> None:
    assert parse("models", "--json").json
    args = parse("layers", "zoo/r50", "--json")
    assert (args.model, args.json, args.size) == ("zoo/r50", True, None)


def test_rf_takes_unit_and_size() -> None:
    args = parse("rf", "m", "/features/conv:0", "--unit", "3", "4", "--size", "224", "320")
    assert (args.model, args.layer) == ("m", "/features/conv:0")
    assert args.unit == [3, 4] and args.size == [224, 320] and not args.json


def test_topk_defaults() -> None:
    args, _ = cli.parse(["topk", "m", "l", "--channel", "5", "--dataset", "photos"])
    assert (args.channel, args.k, args.mode, args.bottom) == (5, 9, "image", False)
    positional, _ = cli.parse(["topk", "m", "l", "5", "--dataset", "photos"])
    assert positional.channel == 5
    assert args.out is None and args.unit is None and not args.json


def test_topk_full_form() -> None:
    args = parse(
        "topk", "m", "l", "--channel", "0", "-k", "4", "--dataset", "d", "--mode", "position",
        "--bottom", "--scale", "1/255", "--channel-order", "bgr", "--out", "o", "--json",
    )  # fmt: skip
    assert (args.k, args.mode, args.bottom, args.json) == (4, "position", True, True)
    assert args.out == Path("o") and args.scale == pytest.approx(1 / 255)


def test_demo_defaults_to_demo_out() -> None:
    args = parse("demo")
    assert args.out == Path("demo-out") and args.k == 8 and args.cache is None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["scan"],
        ["topk", "m", "l", "--dataset", "d"],  # no channel
        ["topk", "m", "l", "1", "--channel", "2", "--dataset", "d"],  # two channels
        ["topk", "m", "l", "--channel", "0"],  # no --dataset
        ["topk", "m", "l", "--channel", "-1", "--dataset", "d"],
        ["topk", "m", "l", "--channel", "0", "--dataset", "d", "-k", "0"],
        ["topk", "m", "l", "--channel", "0", "--dataset", "d", "--mode", "pixel"],
        ["rf", "m"],
    ],
)
def test_bad_usage_exits_2_with_maxact_error(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "maxact: error:" in capsys.readouterr().err


def _maxact_serve(*argv: str) -> subprocess.CompletedProcess[str]:
    """`maxact serve ARGV` as a real process: the client execs the server's entry point."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAXACT_")}
    command = [sys.executable, "-m", "maxact.client.cli.main", "serve", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_serve_without_model_root_exits_2_from_the_server_parser() -> None:
    result = _maxact_serve()  # no --model-root
    assert result.returncode == 2
    assert "maxact: error: the following arguments are required: --model-root" in result.stderr


def test_serve_help_is_the_server_parsers() -> None:
    result = _maxact_serve("--help")
    assert result.returncode == 0
    assert "usage: maxact serve" in result.stdout


def test_unknown_options_of_other_commands_are_still_usage_errors(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["models", "--bogus"])
    assert exit_info.value.code == 2
    assert "maxact: error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_global_flags_are_accepted_after_the_command_too() -> None:
    args = parse("models", "--server", "h:1", "--token-file", "t", "--tls-ca", "ca.pem")
    assert (args.server, args.token_file, args.tls_ca) == ("h:1", Path("t"), Path("ca.pem"))
    nested = parse("scan", "get", "s1", "--server", "h:2")
    assert (nested.command, nested.server) == ("scan", "h:2")


def test_a_global_flag_after_the_command_overrides_the_one_before() -> None:
    assert parse("--server", "a:1", "models", "--server", "b:2").server == "b:2"
    assert parse("--server", "a:1", "models").server == "a:1"


def test_global_flags_default_to_the_maxact_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAXACT_SERVER", "env:7")
    monkeypatch.setenv("MAXACT_TLS_CA", "env-ca.pem")
    args = parse("models")
    assert (args.server, args.tls_ca) == ("env:7", Path("env-ca.pem"))


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        parse("--version")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"maxact {version('maxact')}"


def test_the_installed_version_is_the_one_pyproject_declares() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from maxact.common.version import maxact_version

    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    assert maxact_version() == declared


def test_every_serve_flag_also_reads_its_maxact_environment_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAXACT_MODEL_ROOT", "env-models")  # a required flag: now optional
    monkeypatch.setenv("MAXACT_PORT", "6000")
    monkeypatch.setenv("MAXACT_LOG_FORMAT", "json")
    args = parse_serve()
    assert (args.model_root, args.port, args.log_format) == (Path("env-models"), 6000, "json")
    assert parse_serve("--port", "7000").port == 7000  # the command line wins
    from maxact.server import app

    monkeypatch.setenv("MAXACT_PORT", "many")
    with pytest.raises(SystemExit) as exit_info:
        app.parse_args([])
    assert exit_info.value.code == 2
    assert "$MAXACT_PORT" in capsys.readouterr().err
    monkeypatch.delenv("MAXACT_PORT")
    with pytest.raises(SystemExit):
        app.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in ("HOST", "PORT", "MODEL_ROOT", "DATA_ROOT", "STORE", "DEVICE", "METRICS_PORT"):
        assert f"[env MAXACT_{flag}]" in help_text
