"""Resolve client-supplied names to paths that can never escape their root."""

from __future__ import annotations

from pathlib import Path

from maxact.server.errors import invalid_argument


def resolve_under(root: Path, relative: str, what: str) -> Path:
    """`root / relative`, refusing absolute names, `..`, and symlinks that lead outside root."""
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative:
        raise invalid_argument("INVALID_NAME", f"invalid {what} name {relative!r}", name=relative)
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise invalid_argument(
            "INVALID_NAME",
            f"invalid {what} name {relative!r}: no empty, '.' or '..' components allowed",
            name=relative,
        )
    root_resolved = root.resolve()
    candidate = (root_resolved / relative).resolve()
    if not candidate.is_relative_to(root_resolved):
        raise invalid_argument(
            "INVALID_NAME", f"{what} name {relative!r} points outside its root", name=relative
        )
    return candidate


def is_inside(root: Path, path: Path) -> bool:
    """True when `path` (after resolving symlinks) lies under `root`."""
    return path.resolve().is_relative_to(root.resolve())
