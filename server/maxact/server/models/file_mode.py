"""The mode a file created the ordinary way would get: mkstemp makes 0600 files, and an
uploaded model or sidecar should be as readable as a copied one (0644 under umask 022)."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

_PROC_STATUS = Path("/proc/self/status")
_lock = threading.Lock()


def current_umask() -> int:
    """The process umask: read from /proc where the kernel shows it (no side effect), else
    set and restored under a lock (os.umask is the only portable reader)."""
    try:
        found = re.search(r"^Umask:\s*([0-7]+)$", _PROC_STATUS.read_text(), re.MULTILINE)
    except OSError:
        found = None
    if found:
        return int(found.group(1), 8)
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def give_default_mode(fd: int) -> None:
    """chmod an open file (e.g. from mkstemp) to 0666 minus the umask, as open() would."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o666 & ~current_umask())
