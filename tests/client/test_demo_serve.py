"""`maxact demo --serve` keeps its server up until Ctrl-C, then stops cleanly: the demo's own
server start and serving loop run in a child process (the real demo needs its downloaded
model and photos), which gets a real SIGINT."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.datasets import write_images
from tests.onnx_models import random_cnn, save

# the demo's path from its server start to the end of --serve (run.py: _run and _run_on)
CHILD = """
import sys
from pathlib import Path
from maxact.client.demo import run, web_ui
root = Path(sys.argv[1])
handle = run.demo_server(root / "models", root / "data", root / "store.sqlite")
try:
    web_ui.serve_until_interrupted(handle)
finally:
    handle.stop()
"""
pytestmark = pytest.mark.slow  # a child process that imports and starts a whole server
URL_LINE = re.compile(r"web UI: http://127\.0\.0\.1:(\d+)/ +\(gRPC: 127\.0\.0\.1:(\d+)\)")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ignore_sigint() -> None:
    """What a shell does to a command it starts in the background (`maxact demo --serve &`,
    a CI runner): SIGINT ignored from the start, which Python then leaves ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("stop_with", "sigint_ignored_at_start"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "ctrl-c-started-in-background", "sigterm"],
)
def test_demo_serve_stops_on_ctrl_c_with_exit_0_a_goodbye_and_its_ports_released(
    tmp_path: Path, stop_with: signal.Signals, sigint_ignored_at_start: bool
) -> None:
    save(random_cnn(seed=1, size=32), tmp_path / "models", "net")
    write_images(tmp_path / "data" / "few", 4, 32, seed=2)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if sigint_ignored_at_start else None,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        found = URL_LINE.search(line)
        assert found is not None, (line, child.stderr.read() if child.poll() is not None else "")
        http_port, grpc_port = int(found.group(1)), int(found.group(2))
        assert "Ctrl-C stops the server" in line
        home = httpx.get(f"http://127.0.0.1:{http_port}/", timeout=30)
        assert home.status_code == 200 and "net" in home.text  # the UI serves the models
        started = time.monotonic()
        child.send_signal(stop_with)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert out.splitlines() == ["stopping the demo server", "demo server stopped"]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert time.monotonic() - started < 15  # a prompt stop, not a hang until a timeout
    assert _free(http_port) and _free(grpc_port)
