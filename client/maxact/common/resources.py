"""Resource names of the API (Google AIP-122): a persisted scan is `scans/{id}`, the id being
what the CLI prints. Client and server build and read the name only here."""

from __future__ import annotations

SCANS = "scans"
_PREFIX = SCANS + "/"


def scan_name(scan: str) -> str:
    """A scan id or resource name -> the resource name `scans/<id>`."""
    return scan if scan.startswith(_PREFIX) else _PREFIX + scan


def scan_id(name: str) -> str:
    """A scan's resource name `scans/<id>` (or a bare id) -> its id."""
    return name.removeprefix(_PREFIX)
