"""Scan progress on stderr: a redrawn bar on a terminal, sparse plain lines in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
LOG_INTERVAL_S = 5.0  # plain mode: at most one line per interval (plus the last), logs stay short


class ProgressBar:
    """Shows done / total of `unit` (images for scans, channels for a report); never writes to
    stdout so --json output stays clean."""

    def __init__(
        self, label: str = "scanning", stream: TextIO | None = None, unit: str = "images"
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_log = 0.0
        self._drawn = False
        self._last: tuple[int, int, int] | None = None

    def update(self, done: int, total: int, failed: int = 0) -> None:
        if (done, total, failed) == self._last:
            return
        self._last = (done, total, failed)
        text = self.format(done, total, failed)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._drawn = True
            return
        now = time.monotonic()
        if self._last_log == 0.0 and done == 0:
            self._last_log = now  # plain mode: "0 of N" says nothing; the first line waits
            return
        if now - self._last_log >= LOG_INTERVAL_S or (total and done >= total):
            self._last_log = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def format(self, done: int, total: int, failed: int = 0) -> str:
        """One status line, with a bar when the total is known."""
        skipped = f", {failed} skipped" if failed else ""
        if total <= 0:
            return f"{self.label}: {done} {self.unit}{skipped}"
        filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        return f"{self.label} [{bar}] {done}/{total} {self.unit} ({100 * done // total}%){skipped}"

    def note(self, text: str) -> None:
        """A message line (e.g. a skipped image) that does not garble the redrawn bar."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[2K")
            self._last = None  # redraw the bar on the next update
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the redrawn line so later stderr output starts on a fresh line."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
