"""The demo's web UI: screenshots of the server's own layer and neuron pages (for the README),
and `maxact demo --serve`, which keeps the demo server and its UI running until Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from maxact.client.client import Client
from maxact.client.demo import classes_demo

UI_WINDOW = (1400, 1000)  # px: the layer page's first rows, the neuron page's top and bottom k
UI_LAYER_PNG = "ui-layer.png"
UI_NEURON_PNG = "ui-neuron.png"


def ui_urls(base: str, scan: str, layer: str, channel: int) -> dict[str, str]:
    """The pages pictured: file name -> URL (permanent: the same link opens them later)."""
    return {
        UI_LAYER_PNG: f"{base}/scans/{scan}/layers?{urlencode({'layer': layer})}",
        UI_NEURON_PNG: f"{base}/scans/{scan}/neurons?"
        + urlencode({"layer": layer, "channel": channel, "render": "heatmap"}),
    }


FIRING_AT_LEAST = 0.5  # a showcase fires on at least half the images (full top and bottom rows)


def showcase_channel(client: Client, scan: str, layer: str) -> int:
    """A channel worth showing: the most class-selective of those that fire on at least half
    the images (else channel 0)."""
    channels = [
        c
        for c in client.scans.statistics(scan, layer).channels
        if not c.dead and c.firing_rate >= FIRING_AT_LEAST
    ]
    if not channels:
        return 0
    return max(channels, key=lambda c: (c.selectivity, -c.channel)).channel


def screenshot_ui(
    client: Client, http_url: str | None, index: Path, out_dir: Path, layer: int
) -> str | None:
    """Picture the UI's layer page of the report's `layer`-th layer and one neuron page into
    out_dir; None when written, else why not (no HTTP face, no Chromium)."""
    from maxact.client.report import screenshot

    for name in (UI_LAYER_PNG, UI_NEURON_PNG):
        (out_dir / name).unlink(missing_ok=True)  # never leave the pictures of an older run
    if http_url is None:
        return "the server runs without its HTTP face"
    reason = screenshot.missing()
    if reason is not None:
        return reason
    mapping = classes_demo.report_mapping(index)
    names = [entry["name"] for entry in mapping["layers"]]
    name = names[min(layer, len(names) - 1)]
    scan = str(mapping["scan"]["id"])
    channel = showcase_channel(client, scan, name)
    try:
        for file, url in ui_urls(http_url, scan, name, channel).items():
            screenshot.screenshot_url(url, out_dir / file, *UI_WINDOW)
    except (OSError, subprocess.SubprocessError, screenshot.ScreenshotError) as error:
        return f"headless Chromium failed: {error}"
    return None


def serve_until_interrupted(handle: Any) -> None:
    """Keep the demo server (gRPC and its web UI) running until Ctrl-C (or SIGTERM), then stop
    it: its ports are released and a line says so (no traceback: that is how it is meant to
    end). Ctrl-C is armed here: a shell starting the demo in the background ignores SIGINT,
    and Python then leaves it ignored."""
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    armed = threading.current_thread() is threading.main_thread()
    before = [signal.signal(s, lambda *_: stop.set()) for s in signals] if armed else []
    print(
        f"web UI: {handle.http_url}/  (gRPC: {handle.address}); Ctrl-C stops the server",
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for number, handler in zip(signals, before, strict=False):
            signal.signal(number, handler)
    print("stopping the demo server", flush=True)
    handle.stop()
    print("demo server stopped", flush=True)
