"""Typed, immutable results of the client, so callers never depend on the generated protos
(defined in maxact.common.results, which the server's HTTP face shares)."""

from maxact.common.results import *  # noqa: F403
