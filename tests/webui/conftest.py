"""Fixtures of the web UI tests: one real server in-process (gRPC and HTTP on ephemeral
loopback ports) with a finished scan of a labelled dataset whose class names include a
hostile one, a wide layer (over one page of channels), and an httpx client over the socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maxact.client import Client
from maxact.server.app import RunningServer, start_server
from tests.datasets import tinted_images
from tests.onnx_models import finish, random_cnn, save

# a class folder name that is markup: every page must show it as text and run nothing
HOSTILE = "<img src=x onerror=window.__xss=1>"
CLASSES = ("green", "red", HOSTILE)
MODEL = "zoo/net"  # a model in a sub-folder: its name holds a '/'
LAYERS = ["relu_a", "relu_b", "logits"]
WIDE_CHANNELS = 120  # a layer of more channels than one page shows (50)
DEAD = 6  # channel of relu_a that never fires
K = 5
SIDECAR = {"size": [32, 32], "scale": 0.00392, "mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}


def _net() -> onnx.ModelProto:
    """random_cnn with channel DEAD of relu_a dead (a bias no image can overcome)."""
    model = random_cnn(seed=3, size=32)
    bias = next(init for init in model.graph.initializer if init.name == "b_a")
    values = numpy_helper.to_array(bias).copy()
    values[DEAD] = -1000.0
    bias.CopyFrom(numpy_helper.from_array(values, "b_a"))
    return model


def wide_net(channels: int = WIDE_CHANNELS, size: int = 32) -> onnx.ModelProto:
    """3x3 conv with stride 2 to `channels` channels, then Relu (`relu`): many channels, some
    dead (negative weights and bias)."""
    rng = np.random.default_rng(5)
    weights = rng.normal(0, 0.4, (channels, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(-0.3, 0.4, (channels,)).astype(np.float32)
    bias[::7] = -100.0  # every 7th channel never fires
    graph = helper.make_graph(
        [
            helper.make_node(
                "Conv", ["input", "w", "b"], ["conv"], kernel_shape=[3, 3], strides=[2, 2]
            ),
            helper.make_node("Relu", ["conv"], ["relu"]),
        ],
        "wide",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["N", channels, 15, 15])],
        initializer=[numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )
    return finish(graph)


@dataclass(frozen=True)
class UiWorld:
    server: RunningServer
    client: Client
    scan: str  # finished scan of MODEL over "tinted", layers LAYERS
    wide_scan: str  # finished scan of "wide" over "tinted", layer "relu"
    model_root: Path
    data_root: Path

    @property
    def url(self) -> str:
        return self.server.http_url


def make_world(root: Path, **settings: object) -> tuple[Path, Path]:
    model_root, data_root = root / "models", root / "data"
    path = save(_net(), model_root, MODEL)
    path.with_name("net.preprocess.json").write_text(json.dumps(SIDECAR), encoding="utf-8")
    save(wide_net(), model_root, "wide")
    tinted_images(data_root / "tinted", CLASSES)
    return model_root, data_root


@pytest.fixture(scope="module")
def ui_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiWorld]:
    """One server and two finished scans for the module: the pages only read them."""
    root = tmp_path_factory.mktemp("webui")
    model_root, data_root = make_world(root)
    with (
        start_server(model_root, data_root, device="cpu", store=root / "s.sqlite") as running,
        Client(running.address, timeout=120) as client,
    ):
        scan = client.scans.create(MODEL, LAYERS, "tinted", k=K)
        wide = client.scans.create("wide", ["relu"], "tinted", k=3)
        for made in (scan, wide):
            assert [s.state for s in client.scans.watch(made.id)][-1] == "succeeded"
        yield UiWorld(running, client, scan.id, wide.id, model_root, data_root)


@pytest.fixture
def web(ui_world: UiWorld) -> Iterator[httpx.Client]:
    """An HTTP client of the UI (redirects are not followed: tests look at them)."""
    with httpx.Client(base_url=ui_world.url, timeout=60) as client:
        yield client
