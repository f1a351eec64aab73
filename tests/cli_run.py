"""Running the `maxact` CLI in-process in a test: exit code, stdout and stderr, usage errors
included (the parser exits with 2)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from maxact.client.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as stop:  # a usage error found by the parser
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """The one JSON document a successful command printed."""
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)
