"""A report of a per-image-size detector scan: `--render mask` against `--render rf`, and where
the mask's time goes (the layer's runs, the mask boxes, the rest); first what keeping the hits'
activation maps costs the scan (scans with and without, alternately; the reports use the
last, which kept them).

The model stands in for a text detector (PP-OCR det takes `--resize-shorter 736
--size-multiple 32`): a dynamic-size stride-32 CNN whose last layer's field (~900 px) exceeds
the input, scanned over photo-like images of several shapes at resize_shorter 736. Built with
onnx.helper, no download. Timers wrap the server's functions in this process only.

With `--ppocr LAYER` the model is the real PP-OCRv4 det instead (out of the rapidocr-onnxruntime
wheel in the demo's cache, as `bench/soak.py` fetches it; its sidecar's preprocessing:
`--resize-shorter 736 --size-multiple 32`), scanned at LAYER over the same images.

Usage: python bench/mask_report_bench.py [--images 40] [--channels 64] [-k 9] [--ppocr LAYER]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client import Client
from maxact.client.report.writer import write_report
from maxact.common.preprocessing import Preprocessing
from maxact.server.app import start_server
from maxact.server.patches import cache, crop, render
from maxact.server.scan import kept_maps

SHAPES = ((960, 720), (720, 960), (1024, 768), (800, 800), (1280, 720))
MAPS_BYTES = kept_maps.SCAN_MAPS_BYTES
TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def detector(channels: int) -> onnx.ModelProto:
    """Five stride-2 3x3 convs (16, 24, 32, 48, `channels` wide) with ReLU, stride 32, field
    3 + 2 * (1 + 2 + 4 + 8 + 16) = 65 px, widened by two 3x3 convs dilated 4 (+256 px each)
    to 577 px: light like a mobile detector, its deep field larger than half the input."""
    rng = np.random.default_rng(0)
    widths = [3, 16, 24, 32, 48, channels]
    # (name, out, in, weight scale, conv attributes): five stride-2 convs, two dilated
    convs = [(f"r{i}", widths[i + 1], widths[i], 0.3, {"strides": [2, 2], "pads": [1] * 4})
             for i in range(5)]  # fmt: skip
    convs += [(f"deep{j}", channels, channels, 0.1, {"dilations": [4, 4], "pads": [4] * 4})
              for j in range(2)]  # fmt: skip
    nodes, inits, previous = [], [], "image"
    for name, out, inp, scale, attributes in convs:
        w = rng.normal(0, scale, (out, inp, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w_{name}"))
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w_{name}"], [f"c_{name}"], kernel_shape=[3, 3], **attributes
            )
        )
        nodes.append(helper.make_node("Relu", [f"c_{name}"], [name]))
        previous = name
    graph = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", channels, "h", "w"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def photos(folder: Path, count: int) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for i in range(count):
        small = rng.integers(0, 255, size=(9, 12, 3)).astype(np.uint8)
        size = SHAPES[i % len(SHAPES)]
        image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        image.save(folder / f"photo_{i:03d}.jpg", quality=90)


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start
            CALLS[name] += 1

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("-k", type=int, default=9)
    parser.add_argument("--ppocr", metavar="LAYER", help="PP-OCRv4 det scanned at LAYER")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maxact-mask-bench-"))
    (work / "models").mkdir()
    model, layer = ("det", "deep1")
    prep: Preprocessing | None = Preprocessing(resize_shorter=736, size_multiple=32, scale=1 / 255)
    if args.ppocr:
        from bench.soak import fetch_detector
        from maxact.client.demo.fetch import default_cache_dir

        fetch_detector(default_cache_dir(), work / "models")
        model, layer, prep = "ppocr_det", args.ppocr, None  # its sidecar's preprocessing
    else:
        onnx.save(detector(args.channels), str(work / "models" / "det.onnx"))
    photos(work / "data" / "photos", args.images)
    render.LayerActivations.all_channels = timed(  # type: ignore[method-assign]
        "layer run (all channels, one image)", render.LayerActivations.all_channels
    )
    render.mask_box = timed(
        "mask box (cell_mask, or upsample + quantile; component)", render.mask_box
    )
    names = ("cell_mask", "upsample", "above_quantile", "component_box", "crop_with_border")
    for name in (*names, "letterbox"):
        if hasattr(render, name):
            setattr(render, name, timed(f"  {name}", getattr(render, name)))
    crop.render_loaded = timed("render_loaded (a whole patch)", crop.render_loaded)
    crop.encode_png = timed("  encode_png", crop.encode_png)
    with (
        start_server(work / "models", work / "data", device="cpu", store=work / "s.db") as srv,
        Client(srv.address, timeout=600) as client,
    ):
        # what keeping the hits' maps costs the scan: without and with, alternately
        for keep in (False, True, False, True):
            kept_maps.SCAN_MAPS_BYTES = MAPS_BYTES if keep else 0
            start = time.perf_counter()
            scan = client.scans.create(model, [layer], "photos", k=args.k, preprocessing=prep)
            final = [info for info in client.scans.watch(scan.id)][-1]
            assert final.state == "succeeded", final
            took = time.perf_counter() - start
            print(f"scan of {args.images} images, maps {'kept' if keep else 'off'}: {took:.1f} s")
        info = client.get_model(model, size=(736, 736))
        found = next(entry for entry in info.layers if entry.name == layer)
        field = found.receptive_field
        print(f"{layer} {found.shape} field: {field.geometry if field else None}")
        for mode in ("rf", "mask", "rf", "mask"):
            for c in (cache.ORIGINALS, cache.ACTIVATIONS, cache.RENDERED):
                c.clear()
            TIMES.clear()
            CALLS.clear()
            start = time.perf_counter()
            write_report(client, scan.id, work / f"r-{mode}", k=args.k, render=mode, force=True)
            elapsed = time.perf_counter() - start
            print(f"--render {mode}: {elapsed:.1f} s ({found.shape[0]} channels x {args.k})")
            for name, seconds in sorted(TIMES.items(), key=lambda item: -item[1]):
                print(f"    {name}: {seconds:.2f} s in {CALLS[name]} calls")
            print(
                f"    activation cache: {cache.ACTIVATIONS.misses} misses, "
                f"{cache.ACTIVATIONS.hits} hits"
            )


if __name__ == "__main__":
    main()
