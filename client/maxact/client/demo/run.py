"""`maxact demo`: a real pretrained CNN on real photos, end to end through a real server.

Fetches the model and photos (fetch.py), starts a server in-process on a free loopback port,
runs top-k for a few channels of an early and a mid layer, writes montages and a summary; then a
persisted scan of both layers (every channel) and its HTML gallery (`maxact report`) in
demo-out/report/, and, when Chromium is installed (never installed from here), a screenshot of a
layer page as demo-out/gallery.png.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from maxact.client import types as t
from maxact.client.client import Client
from maxact.client.demo import classes_demo, ocr_demo, web_ui
from maxact.client.demo.docs_pictures import write_docs_pictures
from maxact.client.demo.fetch import (
    DEMO_MODEL,
    DemoSetupError,
    default_cache_dir,
    fetch_demo_model,
    fetch_recogniser,
    write_demo_photos,
)
from maxact.client.demo.text_crops import write_text_crops
from maxact.client.errors import MaxactError
from maxact.client.montage import stack_rows
from maxact.client.patches_out import montage_of, write_patches
from maxact.client.progress import ProgressBar
from maxact.client.report.writer import write_report
from maxact.common import documents as json_out
from maxact.common.kinds import ScanState

DATASET = "photos"
CHANNELS = (0, 1, 2, 3)
DEMO_K = 8  # patches per montage row (`maxact demo -k`)
MONTAGE_TILE = 128  # px per patch in montage.png (and the README's picture of it)
EARLY_RF = (20.0, 60.0, 40.0)  # (low, high, ideal) receptive-field size in input pixels
MID_RF = (100.0, 200.0, 150.0)
REPORT = "report"  # the gallery's folder under the output folder
REPORT_PATCH = 128  # px: the gallery shows patches in 112 px boxes
CANDIDATES_PER_PATCH = 4  # top-k asks for 4k hits and keeps the best one per source photo
GALLERY_PNG = "gallery.png"
CLASSES_PNG = "classes.png"
CLASSES_WINDOW = (1400, 1000)  # px: four channels of a class per row, the first classes
SCREENSHOT_WINDOW = (1080, 900)  # px: a patch row of the layer page fills the width
SCREENSHOT_LAYER = 1  # the mid layer's page: its patches show whole parts of objects


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


def demo_server(model_root: Path, data_root: Path, store: Path) -> Any:
    """The demo's server, in this process on free loopback ports (gRPC and HTTP)."""
    try:
        from maxact.server.app import start_server
    except ImportError as error:
        raise DemoSetupError(
            f"the demo runs a server in-process and needs maxact[server] ({error})"
        ) from error
    return start_server(model_root, data_root, host="127.0.0.1", port=0, store=store)


def source_photo(image: str) -> str:
    """The photo an image of the demo set was made from: 'astronaut-mirrored.jpg' and
    'astronaut.jpg' are both 'astronaut' (fetch.py writes variants as NAME-VARIANT)."""
    return Path(image).stem.split("-", 1)[0]


def distinct_sources(result: t.TopKResult, k: int) -> t.TopKResult:
    """The best hit of each source photo, at most k, re-ranked 1..: a mirrored or cropped
    copy of one photo would otherwise fill a montage with the same object."""
    kept: list[t.Patch] = []
    seen: set[str] = set()
    for patch in sorted(result.patches, key=lambda p: p.hit.rank):
        source = source_photo(patch.hit.image)
        if source in seen:
            continue
        seen.add(source)
        kept.append(replace(patch, hit=replace(patch.hit, rank=len(kept) + 1)))
        if len(kept) == k:
            break
    return replace(result, k=len(kept), patches=tuple(kept))


def _run_channel(
    client: Client, layer: str, channel: int, k: int, out_dir: Path
) -> tuple[t.TopKResult, dict[int, str]]:
    bar = ProgressBar(f"{layer} channel {channel}")
    wanted = k * CANDIDATES_PER_PATCH  # room to drop copies of one photo
    try:
        with client.topk(DEMO_MODEL, layer, channel, dataset=DATASET, k=wanted) as stream:
            for event in stream:
                if isinstance(event, t.Progress):
                    bar.update(event.images_done, event.images_total, event.images_failed)
            result = distinct_sources(stream.result(), k)
    finally:
        bar.close()
    return result, write_patches(result, out_dir)


def scan_and_report(
    client: Client, layers: Sequence[str], out: Path, k: int, dataset: str = DATASET
) -> Path:
    """A persisted scan of `layers` (every channel) over the demo photos (or `dataset`), then
    its HTML gallery written into `out`; returns the path of the gallery's index.html."""
    scan = client.scans.create(DEMO_MODEL, list(layers), dataset, k=k)
    bar = ProgressBar(f"scan {scan.id}")
    try:
        for update in client.scans.watch(scan.id):
            bar.update(update.images_done, update.images_total, update.images_failed)
            scan = update
    finally:
        bar.close()
    if scan.state != ScanState.SUCCEEDED:
        raise MaxactError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "SCAN_NOT_FINISHED",
            f"scan {scan.id} ended {scan.state}: {scan.error}",
        )
    progress = ProgressBar("report", unit="channels")
    # the demo's own folder: a re-run replaces its report
    return write_report(
        client, scan.id, out, k=k, progress=progress, patch_size=REPORT_PATCH, force=True
    )


def screenshot_gallery(index: Path, out: Path, layer: int = 0) -> str | None:
    """Screenshot the gallery's page of its `layer`-th layer into `out` with headless Chromium;
    None when written, else why not (Chromium missing or failing: nothing is installed here)."""
    from maxact.client.report import screenshot

    out.unlink(missing_ok=True)  # never leave the picture of an older run
    reason = screenshot.missing()
    if reason is not None:
        return reason
    mapping = classes_demo.report_mapping(index)
    pages = [entry["page"] for entry in mapping["layers"]]
    page = index.parent / pages[min(layer, len(pages) - 1)]
    try:
        screenshot.screenshot_page(page, out, *SCREENSHOT_WINDOW)
    except (OSError, subprocess.SubprocessError, screenshot.ScreenshotError) as error:
        return f"headless Chromium failed: {error}"
    return None


def run(
    out_dir: Path = Path("demo-out"),
    cache_dir: Path | None = None,
    k: int = DEMO_K,
    docs_dir: Path | None = None,
    serve: bool = False,
) -> int:
    """The whole demo; returns the exit code. With `docs_dir` it also writes the README's
    pictures there (docs_pictures.py); with `serve` it keeps the server and its web UI running
    until Ctrl-C."""
    cache = cache_dir or default_cache_dir()
    state = Path(tempfile.mkdtemp(prefix="maxact-demo-"))  # the server's scan store
    try:
        code = _run(out_dir, cache, state, k, serve)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    if code == 0 and docs_dir is not None:
        written, missing = write_docs_pictures(out_dir, docs_dir)
        for path in written:
            print(f"README picture: {path}")
        if missing:
            print(f"README pictures not updated (no {', '.join(missing)})", file=sys.stderr)
    return code


def _run(out_dir: Path, cache: Path, state: Path, k: int, serve: bool = False) -> int:
    try:
        print(f"fetching the model and photos (cache: {cache}) ...", file=sys.stderr)
        model_path = fetch_demo_model(cache)
        photos = write_demo_photos(cache / "data" / DATASET)
        classes_demo.write_photo_labels(photos)
        classes_demo.write_faces(cache / "data" / classes_demo.FACES)
        classes_demo.write_model_labels(model_path)
        recogniser = fetch_recogniser(cache)
        crops = write_text_crops(cache / "data" / ocr_demo.DATASET)
        handle = demo_server(model_path.parent, cache / "data", state / "store.sqlite")
    except DemoSetupError as error:
        print(f"maxact: error: {error}", file=sys.stderr)
        return 1
    print(
        f"server on 127.0.0.1:{handle.port}; {len(photos)} photos, {len(crops)} text crops",
        file=sys.stderr,
    )
    try:
        return _run_on(handle, recogniser, out_dir, k, serve)
    finally:
        handle.stop()


def _run_on(handle: Any, recogniser: Path, out_dir: Path, k: int, serve: bool) -> int:
    """The demo against the started server `handle`."""
    try:
        with Client(f"127.0.0.1:{handle.port}") as client:
            info = client.get_model(DEMO_MODEL)
            layers = choose_layers(info)
            if not layers:
                print("maxact: error: no layer with a spatial receptive field", file=sys.stderr)
                return 1
            summary = _run_layers(client, info, layers, out_dir, k)
            scanned = [layer.name for layer in layers]
            index = scan_and_report(client, scanned, out_dir / REPORT, k)
            faces, classes_page = classes_demo.run_classes(
                client, index, scanned, out_dir, k, scan_and_report
            )
            summary["recogniser"] = ocr_demo.run_recogniser(client, recogniser, out_dir, k)
            ui_skipped = web_ui.screenshot_ui(
                client,
                handle.http_url if handle.http_port else None,
                index,
                out_dir,
                SCREENSHOT_LAYER,
            )
    except MaxactError as error:
        print(f"maxact: error: {error}", file=sys.stderr)
        return 1
    summary["report"] = str(index.relative_to(out_dir))
    (out_dir / "summary.json").write_text(json_out.dumps(summary) + "\n")
    print(f"montage: {out_dir / 'montage.png'}")
    print(f"summary: {out_dir / 'summary.json'}")
    for layer_doc in summary["layers"]:
        for channel_doc in layer_doc["channels"]:
            print(f"  {out_dir / channel_doc['montage']}")
    print(f"recogniser: {out_dir / ocr_demo.MONTAGE}")
    print(f"report: {index}")
    print(f"faces report: {faces}")
    skipped = screenshot_gallery(index, out_dir / GALLERY_PNG, SCREENSHOT_LAYER)
    if classes_page is not None and skipped is None:
        from maxact.client.report import screenshot

        screenshot.screenshot_page(classes_page, out_dir / CLASSES_PNG, *CLASSES_WINDOW)
        print(f"classes page screenshot: {out_dir / CLASSES_PNG}")
    if skipped is None:
        print(f"gallery screenshot: {out_dir / GALLERY_PNG}")
    else:
        print(f"gallery screenshot skipped: {skipped}")
    if ui_skipped is None:
        print(
            f"web UI screenshots: {out_dir / web_ui.UI_LAYER_PNG}, {out_dir / web_ui.UI_NEURON_PNG}"
        )
    else:
        print(f"web UI screenshots skipped: {ui_skipped}")
    if serve:
        web_ui.serve_until_interrupted(handle)
    else:
        print("browse the scans live in the web UI: maxact demo --serve")
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
            row = montage_of(result, tile=MONTAGE_TILE)
            rows.append((f"{layer.name} / channel {channel}", row))
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
