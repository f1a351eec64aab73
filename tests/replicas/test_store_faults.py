"""A PostgreSQL store that is down, refuses the password, vanishes mid-scan or is not given
what replicas need: one line and exit 2 at start, a pause (not a failure) mid-scan."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from maxact.client import Client
from tests.postgres import PASSWORD
from tests.replicas.conftest import LAYER, LEASE, Shared, hits
from tests.serve_process import serve_fails, serve_process

pytestmark = pytest.mark.slow  # `maxact serve` subprocesses, a database stopped and started


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nobody listens once it is closed


def _serve_flags(shared: Shared, store: str, *extra: str) -> list[str]:
    return [
        *["--model-root", str(shared.models), "--store", store],
        *["--state-dir", str(shared.state), *extra],
    ]


def test_a_database_that_is_down_at_start_is_one_line_and_exit_2(shared: Shared) -> None:
    url = f"postgresql://maxact:{PASSWORD}@127.0.0.1:{_closed_port()}/maxact"
    started = time.monotonic()
    line = serve_fails(*_serve_flags(shared, url))
    assert "cannot be reached" in line and "--store" in line and "127.0.0.1" in line
    assert PASSWORD not in line  # the URL is shown without its password
    assert time.monotonic() - started < 30


def test_a_wrong_password_is_one_line_naming_it(shared: Shared) -> None:
    url = shared.postgres.url(password=False)
    line = serve_fails(*_serve_flags(shared, url), env={"MAXACT_STORE_PASSWORD": "wrong"})
    assert "refused the password" in line and "MAXACT_STORE_PASSWORD" in line
    assert "wrong" not in line.split("refused the password")[0]


def test_the_password_comes_from_the_environment_or_a_file(shared: Shared, tmp_path: Path) -> None:
    url = shared.postgres.url(password=False)
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    with (
        serve_process(*_serve_flags(shared, url, "--store-password-file", str(secret))) as (
            _,
            address,
        ),
        Client(address, timeout=30) as client,
    ):
        assert client.scans.list() == []
    with (
        serve_process(*_serve_flags(shared, url), env={"MAXACT_STORE_PASSWORD": PASSWORD}) as (
            _,
            address,
        ),
        Client(address, timeout=30) as client,
    ):
        assert client.scans.list() == []


def test_postgresql_without_a_state_dir_or_another_scheme_is_one_line(shared: Shared) -> None:
    line = serve_fails("--model-root", str(shared.models), "--store", shared.url)
    assert "--state-dir is required" in line
    line = serve_fails("--model-root", str(shared.models), "--store", "mysql://u@h/db")
    assert "mysql://" in line and "not supported" in line


def test_a_database_lost_mid_scan_pauses_it_and_it_resumes_exactly_when_it_returns(
    shared: Shared, tmp_path: Path
) -> None:
    """PostgreSQL stopped for longer than the lease (a partition): the scan is neither failed
    nor half-written; once the database is back a replica claims it again and finishes it,
    equal to an uninterrupted scan."""
    from maxact.server.app import start_server

    with shared.replica() as a, Client(a.address, timeout=60) as client:
        scan = client.scans.create("heavy", [LAYER], "many", k=3)
        for info in client.scans.watch(scan.id):
            if info.images_done >= 48:
                break
        shared.postgres.stop()
        try:
            time.sleep(LEASE * 2)
        finally:
            shared.postgres.start()
        deadline = time.monotonic() + 120
        while (state := client.scans.get(scan.id)).state != "succeeded":
            assert state.state in ("queued", "running"), state
            assert time.monotonic() < deadline, "the scan never finished"
            time.sleep(0.2)
        assert (state.images_done, state.images_failed) == (400, 0)
        resumed = hits(client, scan.id)
    with (
        start_server(shared.models, shared.data, device="cpu", store=tmp_path / "x.sqlite") as one,
        Client(one.address, timeout=60) as alone,
    ):
        again = alone.scans.create("heavy", [LAYER], "many", k=3)
        assert [i.state for i in alone.scans.watch(again.id)][-1] == "succeeded"
        assert resumed == hits(alone, again.id)
