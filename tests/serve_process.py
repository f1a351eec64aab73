"""`maxact serve` as a real child process, for tests of the command line and of signals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO

SERVE = [
    sys.executable,
    "-m",
    "maxact.client.cli.main",
    "serve",
    "--port",
    "0",
    "--http-port",
    "0",
    "--device",
    "cpu",
]


@contextmanager
def serve_process(
    *flags: str,
    env: Mapping[str, str] | None = None,
    stderr_to: IO[str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    ready: list[str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start `maxact serve --port 0 --device cpu FLAGS` (extra environment `env`; its stderr
    into `stderr_to` if given; `preexec_fn` run in the child before it starts, e.g. to set a
    resource limit); yield (process, address) once it prints the port it listens on (that
    line appended to `ready` if given). A process still running at exit is killed."""
    with (
        tempfile.TemporaryFile("w+") as own,  # a file, not a pipe: a full pipe would block
        tempfile.TemporaryDirectory(prefix="maxact-serve-state-") as state,
    ):
        stderr = stderr_to if stderr_to is not None else own
        process = subprocess.Popen(
            [*SERVE, *flags],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            # the default --store lives under XDG_STATE_HOME: never the user's own
            env={**os.environ, "XDG_STATE_HOME": state, **(env or {})},
            preexec_fn=preexec_fn,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if match is None:
                process.kill()
                process.wait()
                stderr.seek(0)
            assert match, f"the server did not start: {line!r}\n{stderr.read()}"
            if ready is not None:
                ready.append(line)
            yield process, f"127.0.0.1:{match.group(1)}"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def serve_fails(*flags: str, env: Mapping[str, str] | None = None) -> str:
    """Run `maxact serve FLAGS`; it must exit 2 with one `error:` line and no traceback; that
    line."""
    result = subprocess.run(
        [*SERVE, *flags],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]
