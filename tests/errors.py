"""The error a client call raises, for tests that assert its status code, reason and text."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from maxact.client import MaxactError


def raised(call: Callable[[], object]) -> MaxactError:
    """The MaxactError `call()` raises (the test fails when it raises none)."""
    with pytest.raises(MaxactError) as caught:
        call()
    return caught.value
