"""Defaults that are part of the contract, shared by the client, the CLI and the server (which
may import the client, never the other way round)."""

from __future__ import annotations

# Patches per neuron when a request or command does not say: a 3 x 3 montage.
DEFAULT_K = 9


def capped_k(scan_k: int, k: int = DEFAULT_K) -> int:
    """`k` patches, but never more than a scan that kept `scan_k` (0: not known) holds."""
    return min(k, scan_k or k)


# "Fires for everything" (no discriminative power): fires on at least this fraction of images
# and its class-selectivity index is below NON_SELECTIVE_BELOW. The `classes` answer and the
# gallery's badges use this one definition.
FIRES_FOR_EVERYTHING_RATE = 0.9
NON_SELECTIVE_BELOW = 0.1
