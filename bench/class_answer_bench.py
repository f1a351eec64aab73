"""Class answers at many classes: GetClassAnswer, GetClassChannels and the report's classes
page for one layer of a finished scan of a labelled dataset with `--classes` classes.

One tiny image per class (8 x 8 PNG, a labels.csv), a one-layer CNN (Conv 3x3, 64 channels,
ReLU) built with onnx.helper; a server in this process on loopback. The RPC counts of the
classes page come from the server's own Prometheus counters.

Usage: python bench/class_answer_bench.py [--classes 2000] [--channels 64] [--no-report]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image
from prometheus_client import REGISTRY

from maxact.client import Client, Preprocessing
from maxact.server.app import start_server

SIZE = 8
LAYER = "relu"


def _model(channels: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = helper.make_tensor(
        "w", TensorProto.FLOAT, (channels, 3, 3, 3), rng.normal(0, 0.5, (channels, 3, 3, 3))
    )
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["conv"], kernel_shape=[3, 3], pads=[1] * 4),
            helper.make_node("Relu", ["conv"], [LAYER]),
        ],
        "classes_bench",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(LAYER, TensorProto.FLOAT, [None, channels, SIZE, SIZE])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _dataset(folder: Path, classes: int) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    rows = ["path,label"]
    for j in range(classes):
        name = f"{j:05d}.png"
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / name)
        rows.append(f"{name},class_{j:05d}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def _started(method: str) -> float:
    value = REGISTRY.get_sample_value(
        "grpc_server_started_total",
        {"grpc_type": "unary", "grpc_service": "maxact.v1.AnalysisService", "grpc_method": method},
    )
    return value or 0.0


def _timed(what: str, call: object) -> object:
    start = time.perf_counter()
    result = call()  # type: ignore[operator]
    print(f"{what}: {time.perf_counter() - start:.3f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--no-report", action="store_true", help="skip the classes page")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maxact-classes-bench-"))
    (work / "models").mkdir()
    onnx.save(_model(args.channels), work / "models" / "net.onnx")
    _dataset(work / "data" / "many", args.classes)
    with (
        start_server(work / "models", work / "data", device="cpu", store=work / "s.db") as srv,
        Client(srv.address, timeout=3600) as client,
    ):
        prep = Preprocessing(size=(SIZE, SIZE), scale=1 / 255)
        scan = client.scans.create("net", [LAYER], "many", k=3, preprocessing=prep)
        final = [info for info in client.scans.watch(scan.id)][-1]
        assert final.state == "succeeded", final
        print(f"{args.classes} classes x {args.channels} channels, scan {scan.id}")
        for attempt in ("first", "second"):
            _timed(f"GetClassAnswer ({attempt})", lambda: client.analysis.classes(scan.id, LAYER))
        for attempt, name in (("first", "class_00007"), ("second", "class_01234")):
            _timed(
                f"GetClassChannels top 10, k 3, 32 px ({attempt}, {name})",
                lambda name=name: client.analysis.class_channels(  # type: ignore[misc]
                    scan.id, LAYER, name, top=10, k=3, patch_size=32
                ),
            )
        if not args.no_report:
            from maxact.client.report.classes_page import write_classes_page

            before = {m: _started(m) for m in ("GetClassAnswer", "GetClassChannels")}
            _timed(
                "report classes page (all classes)",
                lambda: write_classes_page(client, final, LAYER, work / "report"),
            )
            calls = {m: int(_started(m) - n) for m, n in before.items()}
            print(f"report classes page RPCs: {calls}")


if __name__ == "__main__":
    main()
