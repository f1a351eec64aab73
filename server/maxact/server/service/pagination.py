"""Opaque page tokens and page sizes for every list RPC (AIP-158).

A token is base64url JSON naming the list it belongs to and the sort key of the last item
of the previous page, so pages stay stable while items are added, and a token of one list
(or one we never issued) is refused as INVALID_PAGE_TOKEN, never an INTERNAL error. Tokens
are not signed: they only say where to resume, and every value is validated on decoding.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from maxact.server.errors import invalid_argument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 1024

T = TypeVar("T")
Key = TypeVar("Key", str, int)


def page_size(requested: int) -> int:
    """0 is the default; above the maximum is the maximum (AIP-158); negative is refused."""
    if requested < 0:
        raise invalid_argument(
            "INVALID_PAGE_SIZE", f"page_size must be >= 0 (0: {DEFAULT_PAGE_SIZE}), not {requested}"
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(listing: str, after: str | int) -> str:
    document = json.dumps({"list": listing, "after": after}, separators=(",", ":"))
    return base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")


def decode_token(listing: str, token: str, key_type: type[Key]) -> Key | None:
    """The key to resume after, None for the first page (empty token)."""
    if not token:
        return None
    bad = invalid_argument(
        "INVALID_PAGE_TOKEN",
        f"page_token is not a token this server issued for {listing}: pass the"
        " next_page_token of the previous response, or none for the first page",
    )
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        document = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError included
        raise bad from None
    if not isinstance(document, dict) or document.get("list") != listing:
        raise bad
    after = document.get("after")
    if type(after) is not key_type:  # bool is not an int key
        raise bad
    return after


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def page_of(
    listing: str,
    items: Sequence[T],
    key: Callable[[T], Key],
    requested_size: int,
    token: str,
    key_type: type[Key],
) -> Page[T]:
    """One page of `items` (already sorted ascending by `key`) after the token's key."""
    size = page_size(requested_size)
    after = decode_token(listing, token, key_type)
    remaining = [item for item in items if after is None or key(item) > after]
    page = remaining[:size]
    more = len(remaining) > size
    return Page(page, encode_token(listing, key(page[-1])) if more and page else "")
