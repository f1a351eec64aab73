"""The load that health must be answered under, shared by tests/server/test_health_under_load.py
and bench/health_bench.py: `streams` top-k streams and `scans` persisted scans, each in its own
thread with its own client, looping against a server until the load is stopped."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from maxact.client import Client, MaxactError, Preprocessing


def write_noise_photos(folder: Path, count: int, size: int) -> None:
    """`count` size x size PNGs of uniform noise (seeded) in `folder`."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


@dataclass
class Load:
    """`with Load(...) as load:` runs the load; `load.served` counts the calls that finished."""

    address: str
    model: str
    stream_layer: str
    scan_layers: Sequence[str]
    dataset: str
    size: int
    streams: int = 64
    scans: int = 2
    timeout: float = 60.0
    served: dict[str, int] = field(default_factory=lambda: {"streams": 0, "scans": 0})
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._stream, args=(i,), daemon=True)
            for i in range(self.streams)
        ]
        self._threads += [
            threading.Thread(target=self._scan, daemon=True) for _ in range(self.scans)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, wait: float = 0.0) -> None:
        """Stop looping; wait up to `wait` seconds for the calls in flight to end."""
        self._stop.set()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _stream(self, channel: int) -> None:
        prep = Preprocessing(size=(self.size, self.size))
        with Client(self.address, timeout=self.timeout) as client, contextlib.suppress(MaxactError):
            while not self._stop.is_set():
                client.topk(
                    self.model,
                    self.stream_layer,
                    channel % 32,
                    dataset=self.dataset,
                    k=4,
                    preprocessing=prep,
                ).result()
                self.served["streams"] += 1

    def _scan(self) -> None:
        prep = Preprocessing(size=(self.size, self.size))
        with Client(self.address, timeout=self.timeout) as client, contextlib.suppress(MaxactError):
            while not self._stop.is_set():
                info = client.scans.create(
                    self.model, list(self.scan_layers), self.dataset, k=4, preprocessing=prep
                )
                list(client.scans.watch(info.id))
                self.served["scans"] += 1
