"""Defaults that are part of the contract, shared by the client, the CLI and the server (which
may import the client, never the other way round)."""

from __future__ import annotations

# Patches per neuron when a request or command does not say: a 3 x 3 montage.
DEFAULT_K = 9
