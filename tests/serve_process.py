"""`maxact serve` as a real child process, for tests of the command line and of signals."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

SERVE = [sys.executable, "-m", "maxact.client.cli.main", "serve", "--port", "0", "--device", "cpu"]


@contextmanager
def serve_process(*flags: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start `maxact serve --port 0 --device cpu FLAGS`; yield (process, address) once it prints
    the port it listens on. A process still running at exit is killed."""
    with tempfile.TemporaryFile("w+") as stderr:  # a file, not a pipe: a full pipe would block
        process = subprocess.Popen(
            [*SERVE, *flags],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
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
            yield process, f"127.0.0.1:{match.group(1)}"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
