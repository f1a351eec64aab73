"""Resolve client-supplied names to paths that can never escape their root."""

from __future__ import annotations

from pathlib import Path

from maxact.server.errors import invalid_argument, shown

MAX_NAME_CHARS = 1024
MAX_COMPONENT_BYTES = 255  # NAME_MAX of common file systems
MAX_COMPONENTS = 32


def check_name(name: str, what: str) -> None:
    """THE validation of a client-supplied (or stored) relative name, before anything touches
    the file system (see `name_problem`). Errors echo at most 200 characters of the name."""
    why = name_problem(name)
    if why is not None:
        raise invalid_argument(
            "INVALID_NAME", f"invalid {what} name {shown(name)}: {why}", name=name
        )


def name_problem(name: str) -> str | None:
    """Why `name` is not a safe relative name, or None: not empty, no NUL or control
    characters, no backslash, not absolute, at most MAX_NAME_CHARS characters and
    MAX_COMPONENTS components, each component non-empty (no trailing or doubled '/'), not '.'
    or '..', not hidden (leading '.'), and at most MAX_COMPONENT_BYTES bytes."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"it has {len(name)} characters, at most {MAX_NAME_CHARS} are allowed"
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in name):
        return "it contains a NUL or control character"
    if "\\" in name:
        return "use '/' to separate folders, not '\\'"
    if name.startswith("/"):
        return "it must be relative, not start with '/'"
    parts = name.split("/")
    if len(parts) > MAX_COMPONENTS:
        return f"it has {len(parts)} path components, at most {MAX_COMPONENTS}"
    for part in parts:
        if part == "":
            return "no empty components (a trailing or doubled '/')"
        if part in (".", ".."):
            return "no '.' or '..' components allowed"
        if part.startswith("."):
            return f"no hidden components (starting with '.'): {shown(part)}"
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            return "it is not valid UTF-8"
        if size > MAX_COMPONENT_BYTES:
            return f"a component is {size} bytes long, at most {MAX_COMPONENT_BYTES} are allowed"
    return None


def resolve_under(root: Path, relative: str, what: str) -> Path:
    """`root / relative` for a name that passes `check_name`, refusing symlinks that lead
    outside root."""
    check_name(relative, what)
    root_resolved = root.resolve()
    candidate = (root_resolved / relative).resolve()
    if not candidate.is_relative_to(root_resolved):
        raise invalid_argument(
            "INVALID_NAME", f"{what} name {shown(relative)} points outside its root", name=relative
        )
    return candidate


def is_inside(root: Path, path: Path) -> bool:
    """True when `path` (after resolving symlinks) lies under `root`."""
    return path.resolve().is_relative_to(root.resolve())
