"""The installed maxact version, read from the distribution's metadata (one source: pyproject).

The CLI prints it (`maxact --version`) and the server compares it with its Ray workers', which
must run the same code to merge their reducer states exactly.
"""

from __future__ import annotations

import importlib.metadata

NOT_INSTALLED = "unknown (not installed)"


def maxact_version() -> str:
    """The version pip installed, or NOT_INSTALLED when run from a bare source tree."""
    try:
        return importlib.metadata.version("maxact")
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED
