"""The error a client call raises, for tests that assert its status code, reason and text; raw
stubs for the tests that send what the client library never would."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from maxact.client import Client, MaxactError
from maxact.client.channel import open_channel
from maxact.client.errors import from_rpc_error


def raised(call: Callable[[], object]) -> MaxactError:
    """The MaxactError `call()` raises (the test fails when it raises none)."""
    with pytest.raises(MaxactError) as caught:
        call()
    return caught.value


def raw_channel(client: Client) -> grpc.Channel:
    """A channel of our own to the client's server, for raw stubs (malformed streams, foreign
    page tokens, tiny deadlines) without reaching into the client's private channel."""
    return open_channel(client.server)


def raw_error(call: Callable[[], object]) -> MaxactError:
    """The MaxactError for the grpc.RpcError a raw stub `call()` raises (the client library's
    own conversion: code, reason, message)."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return from_rpc_error(caught.value)
