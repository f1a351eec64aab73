"""One settings class: `maxact serve`'s flags, their MAXACT_* variables and the in-process
server of tests and the demo all derive from ServeSettings, so their defaults cannot drift."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from maxact.client import Client
from maxact.server.app import parse_args, start_server
from maxact.server.serve_flags import flag_name, serve_parser
from maxact.server.settings import IN_PROCESS_DEFAULTS, Group, ServeSettings, env_name
from tests.onnx_models import bright_square_model, save


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MAXACT_* variable of the caller may change `maxact serve`'s defaults here."""
    for name in os.environ:
        if name.startswith("MAXACT_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_environment")
def test_in_process_server_has_maxact_serves_defaults_field_by_field(tmp_path: Path) -> None:
    save(bright_square_model(64), tmp_path, "net")
    served = parse_args(["--model-root", str(tmp_path)])
    with start_server(tmp_path) as running, Client(running.address, timeout=30) as client:
        assert [m.name for m in client.list_models()] == ["net"]
        in_process = running.config.settings
    differing = {
        name: (getattr(in_process, name), getattr(served, name))
        for name in ServeSettings.model_fields
        if getattr(in_process, name) != IN_PROCESS_DEFAULTS.get(name, getattr(served, name))
    }
    assert differing == {}
    assert served.port == 50051 and in_process.port == 0  # the one deliberate difference
    assert in_process.cache_bytes == served.cache_bytes == 10 * 1024**3  # was 0 in-process


def test_every_setting_is_a_flag_with_help_in_its_group_and_names_its_variable() -> None:
    parser = serve_parser()
    by_flag = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    titles = [g.title for g in parser._action_groups]
    assert titles[-len(Group) :] == [g.value for g in Group]  # `serve --help` keeps its groups
    for name, info in ServeSettings.model_fields.items():
        action = by_flag[flag_name(name)]
        assert info.description and info.description in (action.help or "")
        assert f"[env {env_name(name)}]" in (action.help or "")
        group = next(g for g in parser._action_groups if action in g._group_actions)
        assert group.title == info.json_schema_extra["group"]  # type: ignore[index]


@pytest.mark.usefixtures("clean_environment")
def test_environment_variables_come_from_the_settings_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAXACT_MODEL_ROOT", "models")
    monkeypatch.setenv("MAXACT_RAY_ADDRESS", "auto")  # was read by hand
    monkeypatch.setenv("MAXACT_STORE_MAX_MB", "3")
    monkeypatch.setenv("MAXACT_MAX_RUNNING_SCANS", "4")
    monkeypatch.setenv("MAXACT_CACHE", "/elsewhere")  # the demo's own variable: not a setting
    settings = parse_args([])
    assert (settings.model_root, settings.ray_address) == (Path("models"), "auto")
    assert (settings.store_max_bytes, settings.max_running_scans) == (3 * 1024 * 1024, 4)
    assert parse_args(["--max-running-scans", "2"]).max_running_scans == 2  # the flag wins
    monkeypatch.setenv("MAXACT_RAY_ADDRESS", "")
    assert parse_args([]).ray_address is None  # empty means unset


@pytest.mark.usefixtures("clean_environment")
def test_a_bad_flag_or_variable_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model-root", "m", "--checkpoint-images", "0"])
    assert exit_info.value.code == 2
    assert "maxact: error: --checkpoint-images: " in capsys.readouterr().err
    monkeypatch.setenv("MAXACT_CACHE_GB", "lots")
    with pytest.raises(SystemExit):
        parse_args(["--model-root", "m"])
    assert "$MAXACT_CACHE_GB" in capsys.readouterr().err
    monkeypatch.delenv("MAXACT_CACHE_GB")
    with pytest.raises(SystemExit):
        parse_args([])  # no --model-root and no $MAXACT_MODEL_ROOT
    assert "--model-root" in capsys.readouterr().err


def test_in_process_settings_ignore_the_environment_and_refuse_unknown_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAXACT_DEVICE", "cuda")
    monkeypatch.setenv("MAXACT_CHECKPOINT_IMAGES", "7")
    settings = ServeSettings.in_process(model_root="m", max_running_scans=3)
    assert (settings.device, settings.checkpoint_images) == ("auto", 256)
    assert settings.max_running_scans == 3  # settable in-process now
    with pytest.raises(ValidationError, match="checkpoint_imagez"):
        ServeSettings.in_process(model_root="m", checkpoint_imagez=1)


@pytest.mark.usefixtures("clean_environment")
def test_the_health_probe_reads_serves_variables_with_serves_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from maxact.server.settings import ProbeSettings

    served = parse_args(["--model-root", "m"])
    probe = ProbeSettings()
    for name in ProbeSettings.model_fields:
        assert getattr(probe, name) == getattr(served, name)
        assert (
            ServeSettings.model_fields[name].annotation
            == ProbeSettings.model_fields[name].annotation
        )
    monkeypatch.setenv("MAXACT_PORT", "6001")
    assert ProbeSettings().port == parse_args(["--model-root", "m"]).port == 6001
    monkeypatch.setenv("MAXACT_HEALTH_PORT", "6002")
    assert ProbeSettings().health_port == parse_args(["--model-root", "m"]).health_port == 6002


def test_the_limits_read_from_the_settings_have_the_limits_defaults() -> None:
    from maxact.server.limits import Limits

    assert Limits.of(ServeSettings.in_process(model_root="m")) == Limits()
    bound = ServeSettings.in_process(model_root="m", max_request_mb=0.5, max_input_pixels=99)
    assert Limits.of(bound) == Limits(max_input_pixels=99, max_request_bytes=512 * 1024)
