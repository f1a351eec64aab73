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

# The class answer: a channel is selective for its class from this selectivity on, and each
# class lists at most this many top channels, unless the request says otherwise.
DEFAULT_SELECTIVE = 0.5
DEFAULT_TOP_CHANNELS = 10

# `render mask`: the per-image quantile of the activation map the mask keeps.
DEFAULT_MASK_QUANTILE = 0.95

# a channel's label (from a scan's per-image responses) is shown beside it from this ROC AUC
# on (INVERT, Bykov et al. 2023)
LABEL_AUC = 0.75

# bins of the small histogram of a channel's per-image responses beside it (report, web UI)
HISTOGRAM_BINS = 20
