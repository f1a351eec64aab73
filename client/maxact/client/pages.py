"""Follow a paginated list RPC's page tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def all_pages(fetch_page: Callable[[str], tuple[list[T], str]]) -> Iterator[T]:
    """Every item of every page: `fetch_page(token)` returns (items, next_page_token); an
    empty next token ends the list. Pages are fetched lazily, one at a time."""
    token = ""
    while True:
        items, token = fetch_page(token)
        yield from items
        if not token:
            return
