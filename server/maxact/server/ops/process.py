"""The process's own resident memory, read from /proc (Linux); 0 where there is none."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """Resident set size now (/proc/self/statm: cheap enough to read per session creation)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _libc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _libc_trim()


def release_free_memory() -> None:
    """Give the C allocator's free pages back to the system (glibc `malloc_trim`): buffers of
    variable shapes, freed by onnxruntime's arena, otherwise stay resident in the allocator's
    per-thread arenas. A no-op where the C library is not glibc."""
    if _TRIM is not None:
        _TRIM(0)


_CLEAR_REFS = "/proc/self/clear_refs"
RESET_PEAK = b"5"  # clear_refs: reset the peak resident set size to the current one


def reset_peak_resident() -> bool:
    """Start a new resident-memory high-water mark (`peak_resident_bytes`); False where the
    system cannot (not Linux, an older kernel, no permission)."""
    try:
        with open(_CLEAR_REFS, "wb") as f:
            f.write(RESET_PEAK)
        return True
    except OSError:
        return False


def peak_resident_bytes() -> int:
    """The highest resident set size since the last `reset_peak_resident` (VmHWM); 0 where
    there is none."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0
