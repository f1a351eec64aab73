"""`maxact demo`: a real pretrained CNN on real photos, end to end through a real server.

Fetches the model and photos (fetch.py), starts a server in-process on a free loopback port,
runs top-k for a few channels of an early and a mid layer, writes montages and a summary.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maxact.client import json_out
from maxact.client import types as t
from maxact.client.client import Client
from maxact.client.errors import MaxactError
from maxact.client.fetch import (
    DEMO_MODEL,
    DemoSetupError,
    default_cache_dir,
    fetch_demo_model,
    write_demo_photos,
)
from maxact.client.montage import stack_rows
from maxact.client.patches_out import montage_of, write_patches
from maxact.client.progress import ProgressBar

DATASET = "photos"
CHANNELS = (0, 1, 2, 3)
EARLY_RF = (20.0, 60.0, 40.0)  # (low, high, ideal) receptive-field size in input pixels
MID_RF = (100.0, 200.0, 150.0)


def _rf_size(layer: t.LayerInfo) -> float:
    assert layer.receptive_field is not None
    return max(layer.receptive_field.geometry.size)


def _pick(
    layers: Sequence[t.LayerInfo], window: tuple[float, float, float], exclude: set[str]
) -> t.LayerInfo | None:
    """The layer whose field is nearest the ideal size, preferring ones inside the window and
    HardSwish activations (what the network's blocks actually output)."""
    low, high, ideal = window
    pool = [layer for layer in layers if layer.name not in exclude]
    if not pool:
        return None

    def key(layer: t.LayerInfo) -> tuple[bool, bool, float]:
        size = _rf_size(layer)
        inside = low <= size <= high
        return (not inside, "hardswish" not in layer.name.lower(), abs(size - ideal))

    return min(pool, key=key)


def choose_layers(info: t.ModelInfo) -> list[t.LayerInfo]:
    """An early layer (field ~20-60 px) and a mid layer (~100-200 px) that can show patches."""
    usable = [layer for layer in info.layers if layer.has_spatial_field]
    local = [layer for layer in usable if not layer.global_context] or usable
    chosen: list[t.LayerInfo] = []
    for window in (EARLY_RF, MID_RF):
        layer = _pick(local, window, {c.name for c in chosen})
        if layer is not None:
            chosen.append(layer)
    return chosen


def slug(name: str) -> str:
    """A file-system-safe folder name for a tensor name (which may contain / : .)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "layer"


def _start_server(model_root: Path, data_root: Path) -> Any:
    try:
        from maxact.server.app import start_server  # lazy: needs the `server` extra
    except ImportError as error:
        raise DemoSetupError(
            f"the demo runs a server in-process and needs maxact[server] ({error})"
        ) from error
    return start_server(model_root, data_root, host="127.0.0.1", port=0)


def _run_channel(
    client: Client, layer: str, channel: int, k: int, out_dir: Path
) -> tuple[t.TopKResult, dict[int, str]]:
    bar = ProgressBar(f"{layer} channel {channel}")
    try:
        with client.topk(DEMO_MODEL, layer, channel, dataset=DATASET, k=k) as stream:
            for event in stream:
                if isinstance(event, t.Progress):
                    bar.update(event.images_done, event.images_total, event.images_failed)
            result = stream.result()
    finally:
        bar.close()
    return result, write_patches(result, out_dir)


def run(out_dir: Path = Path("demo-out"), cache_dir: Path | None = None, k: int = 8) -> int:
    """The whole demo; returns the exit code."""
    cache = cache_dir or default_cache_dir()
    try:
        print(f"fetching the model and photos (cache: {cache}) ...", file=sys.stderr)
        model_path = fetch_demo_model(cache)
        photos = write_demo_photos(cache / "data" / DATASET)
        handle = _start_server(model_path.parent, cache / "data")
    except DemoSetupError as error:
        print(f"maxact: error: {error}", file=sys.stderr)
        return 1
    print(f"server on 127.0.0.1:{handle.port}; {len(photos)} photos", file=sys.stderr)
    try:
        with Client(f"127.0.0.1:{handle.port}") as client:
            info = client.get_model(DEMO_MODEL)
            layers = choose_layers(info)
            if not layers:
                print("maxact: error: no layer with a spatial receptive field", file=sys.stderr)
                return 1
            summary = _run_layers(client, info, layers, out_dir, k)
    except MaxactError as error:
        print(f"maxact: error: {error}", file=sys.stderr)
        return 1
    finally:
        handle.stop()
    (out_dir / "summary.json").write_text(json_out.dumps(summary) + "\n")
    print(f"montage: {out_dir / 'montage.png'}")
    print(f"summary: {out_dir / 'summary.json'}")
    for layer_doc in summary["layers"]:
        for channel_doc in layer_doc["channels"]:
            print(f"  {out_dir / channel_doc['montage']}")
    return 0


def _run_layers(
    client: Client, info: t.ModelInfo, layers: Sequence[t.LayerInfo], out_dir: Path, k: int
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    layer_docs = []
    for layer in layers:
        assert layer.receptive_field is not None
        channel_docs = []
        for channel in CHANNELS:
            if layer.shape and channel >= layer.shape[0]:
                break
            rel = Path(slug(layer.name)) / f"channel_{channel}"
            result, files = _run_channel(client, layer.name, channel, k, out_dir / rel)
            rows.append((f"{layer.name} / channel {channel}", montage_of(result, tile=128)))
            doc = json_out.topk_json(result, {r: str(rel / f) for r, f in files.items()})
            channel_docs.append({"montage": str(rel / "montage.png"), **doc})
        layer_docs.append(
            {
                "layer": layer.name,
                "op": layer.op,
                "shape": list(layer.shape),
                "rf": json_out.geometry_json(layer.receptive_field.geometry),
                "channels": channel_docs,
            }
        )
    stack_rows(rows).save(out_dir / "montage.png")
    return {
        "model": info.name,
        "dataset": DATASET,
        "input": {"height": info.input_height, "width": info.input_width},
        "k": k,
        "montage": "montage.png",
        "layers": layer_docs,
    }


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - `python -m` shim
    from maxact.client.cli import main as cli_main

    return cli_main(["demo", *(argv or [])])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
