"""Resolve client-supplied names to paths that can never escape their root."""

from __future__ import annotations

from pathlib import Path

from maxact.server.errors import ServiceError, invalid_argument, shown

MAX_NAME_CHARS = 1024
MAX_COMPONENT_BYTES = 255  # NAME_MAX of common file systems
MAX_COMPONENTS = 32


def check_name(name: str, what: str) -> None:
    """THE validation of a client-supplied (or stored) relative name, before anything touches
    the file system: not empty, no NUL or control characters, no backslash, not absolute, at
    most MAX_NAME_CHARS characters and MAX_COMPONENTS components, each component non-empty
    (no trailing or doubled '/'), not '.' or '..', not hidden (leading '.'), and at most
    MAX_COMPONENT_BYTES bytes. Errors echo at most 200 characters of the name."""

    def refuse(why: str) -> ServiceError:
        return invalid_argument(
            "INVALID_NAME", f"invalid {what} name {shown(name)}: {why}", name=name
        )

    if not isinstance(name, str) or not name:
        raise refuse("it is empty")
    if len(name) > MAX_NAME_CHARS:
        raise refuse(f"it has {len(name)} characters, at most {MAX_NAME_CHARS} are allowed")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in name):
        raise refuse("it contains a NUL or control character")
    if "\\" in name:
        raise refuse("use '/' to separate folders, not '\\'")
    if name.startswith("/"):
        raise refuse("it must be relative, not start with '/'")
    parts = name.split("/")
    if len(parts) > MAX_COMPONENTS:
        raise refuse(f"it has {len(parts)} path components, at most {MAX_COMPONENTS}")
    for part in parts:
        if part == "":
            raise refuse("no empty components (a trailing or doubled '/')")
        if part in (".", ".."):
            raise refuse("no '.' or '..' components allowed")
        if part.startswith("."):
            raise refuse(f"no hidden components (starting with '.'): {shown(part)}")
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            raise refuse("it is not valid UTF-8") from None
        if size > MAX_COMPONENT_BYTES:
            raise refuse(
                f"a component is {size} bytes long, at most {MAX_COMPONENT_BYTES} are allowed"
            )


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
