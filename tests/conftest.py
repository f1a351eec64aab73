"""Fixtures: a real maxact server in-process on an ephemeral loopback port, and real clients."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from maxact.client import Client
from tests.browser import Browser, browser_missing
from tests.onnx_models import bright_square_model
from tests.postgres import Postgres


@pytest.fixture(scope="session", autouse=True)
def state_outside_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite writes no state into the user's home: `maxact serve` without --store (also in
    subprocesses, which inherit the environment) keeps its store under a temporary
    XDG_STATE_HOME. The demo's download cache ($MAXACT_CACHE) is left as the user set it."""
    state = tmp_path_factory.mktemp("xdg-state")
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(state)
    try:
        yield state
    finally:
        if saved is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = saved


@pytest.fixture
def model_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    """bright_square_model saved outside the model root: a model file to upload."""
    path = tmp_path / "upload" / "net.onnx"
    path.parent.mkdir()
    onnx.save(bright_square_model(64), str(path))
    return path


@pytest.fixture
def server(model_root: Path, data_root: Path) -> Iterator[object]:
    from maxact.server.app import start_server

    running = start_server(model_root, data_root, port=0, device="cpu")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server: object) -> Iterator[Client]:
    with Client(server.address, timeout=120) as connected:  # type: ignore[attr-defined]
        yield connected


@pytest.fixture(scope="session")
def chromium() -> None:
    """Skip (with the reason `make sysdeps` recorded) where Chromium cannot run."""
    reason = browser_missing()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def browser(chromium: None, tmp_path: Path) -> Iterator[Browser]:
    """A headless Chromium at 1400x1000 driven over WebDriver."""
    with Browser(tmp_path / "chromium-profile") as opened:
        yield opened


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server for the session (initdb + pg_ctl on a loopback port, stopped at
    the end); the tests that need it skip, with the reason, when none can be started."""
    try:
        server = Postgres()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Each back end of the store in turn: an SQLite file, a new PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "store" / "scans.sqlite"
    server: Postgres = request.getfixturevalue("postgres")
    return server.url()
