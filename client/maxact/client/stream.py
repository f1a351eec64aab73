"""TopKStream: a server stream of typed events that can be cancelled or collected."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, NamedTuple

import grpc

from maxact.client import types as t
from maxact.client.errors import MaxactError, from_rpc_error
from maxact.common import convert


class _Query(NamedTuple):
    """What was asked, for the result (the done event repeats k and mode when it knows them)."""

    model: str
    layer: str
    channel: int
    k: int
    mode: str


class TopKStream(Iterator[t.TopKEvent]):
    """Iterate for Progress / PartialTopK / Patch / ImageSkipped / Done, or call result().

    As a context manager it cancels the server's scan on exit unless the stream finished, so
    a client that stops early (an exception, Ctrl-C) never leaves the server scanning.
    """

    def __init__(
        self,
        call: Any,
        *,
        model: str,
        layer: str,
        channel: int,
        k: int,
        mode: str,
        bottom: bool,
        server: str = "",
        local_error: Callable[[], BaseException | None] = lambda: None,
    ) -> None:
        self._call = call
        self._local_error = local_error  # e.g. an image file that could not be read
        self._query = _Query(model, layer, channel, k, mode)
        self._bottom = bottom
        self._server = server
        self._cancelled = False
        self._finished = False
        self._patches: list[t.Patch] = []
        self._skipped: list[t.ImageSkipped] = []
        self._done: t.Done | None = None
        self.progress: t.Progress | None = None
        """The latest progress event, for progress displays."""

    def __iter__(self) -> TopKStream:
        return self

    def __next__(self) -> t.TopKEvent:
        while True:
            try:
                msg = next(self._call)
            except StopIteration:
                self._finished = True
                raise
            except grpc.RpcError as error:
                self._finished = True
                if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:
                    raise StopIteration from None
                local = self._local_error()
                if local is not None:  # the client cancelled the call because of it
                    raise local from None
                raise from_rpc_error(error, self._server) from None
            event = convert.topk_event(msg)
            if event is not None:
                self._record(event)
                return event

    def _record(self, event: t.TopKEvent) -> None:
        if isinstance(event, t.Progress):
            self.progress = event
        elif isinstance(event, t.Patch):
            self._patches.append(event)
        elif isinstance(event, t.ImageSkipped):
            self._skipped.append(event)
        elif isinstance(event, t.Done):
            self._done = event

    def cancel(self) -> None:
        """Ask the server to stop the scan now; iteration then ends quietly."""
        if not self._finished:
            self._cancelled = True
            self._call.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def result(self) -> t.TopKResult:
        """Consume the rest of the stream and return the collected patches, best first."""
        for _ in self:
            pass
        if self._done is None:
            if self._cancelled:
                raise MaxactError(grpc.StatusCode.CANCELLED, "", "the top-k stream was cancelled")
            raise MaxactError(
                grpc.StatusCode.UNKNOWN, "", "the top-k stream ended before its done event"
            )
        done = self._done
        q = self._query
        return t.TopKResult(
            model=q.model,
            layer=q.layer,
            channel=q.channel,
            k=done.k or q.k,
            mode=done.mode or q.mode,
            bottom=self._bottom,
            images_scanned=done.images_scanned,
            images_failed=done.images_failed,
            patches=tuple(sorted(self._patches, key=lambda p: p.hit.rank)),
            skipped=tuple(self._skipped),
            preprocessing=done.preprocessing,
            preprocessing_warning=done.preprocessing_warning,
        )

    def __enter__(self) -> TopKStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
