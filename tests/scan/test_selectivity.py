"""A labelled synthetic dataset (vertical stripes / horizontal stripes / red blobs) and a
hand-set model: the statistics name each detector as selective for its class, a constant-zero
channel as dead, and an always-on channel as non-selective."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.server.scan.layer import ReduceOptions
from tests.onnx_models import detector_weights, finish
from tests.scan.helpers import engine, label_array, load, sources

SIZE = 32
PER_CLASS = 70
KERNEL = 8


def detector_model() -> onnx.ModelProto:
    """One 8x8 conv (the channels of detector_weights) + ReLU, input scaled to 0..1."""
    w, b = detector_weights(KERNEL)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w", "b"], ["conv"], kernel_shape=[KERNEL] * 2),
            helper.make_node("Relu", ["conv"], ["features"]),
        ],
        "detectors",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 5, 25, 25])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return finish(graph)


def write_classes(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(PER_CLASS):
        level = int(rng.integers(160, 256))
        phase = int(rng.integers(0, 2))
        vertical = np.where((xx + phase) % 2 == 0, level, 0)[..., None].repeat(3, axis=2)
        horizontal = np.where((yy + phase) % 2 == 0, level, 0)[..., None].repeat(3, axis=2)
        blobs = np.zeros((SIZE, SIZE, 3), dtype=np.int64)
        for _ in range(int(rng.integers(1, 4))):  # centres inside the 25x25 valid conv area
            cy, cx, r = rng.integers(4, 21), rng.integers(4, 21), rng.integers(2, 6)
            blobs[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (level, 0, 0)
        for name, pixels in (("hstripes", horizontal), ("redblobs", blobs), ("vstripes", vertical)):
            path = root / name / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def statistics(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("selectivity")
    model = load(detector_model(), root / "models", "detectors")
    data = root / "data"
    write_classes(data)
    from maxact.server.data.datasets import list_image_ids

    ids = list_image_ids(data)
    classes, labels = label_array(data, ids)
    scan = engine(model, ["features"], SIZE, ReduceOptions(k=9), classes)
    scan.run(sources(data, ids), labels)
    return scan.reducers["features"].statistics(labels)


def test_detectors_are_named_selective_for_their_class(statistics) -> None:
    assert statistics.classes == ("hstripes", "redblobs", "vstripes")
    assert statistics.images == 3 * PER_CLASS
    assert statistics.selective_channels(0.9) == {
        "hstripes": [1],
        "redblobs": [2],
        "vstripes": [0],
    }
    for channel, name in ((0, "vstripes"), (1, "hstripes"), (2, "redblobs")):
        assert statistics.selectivity[channel] == pytest.approx(1.0)
        assert statistics.top_units_per_class[name][0] == channel
        histogram = statistics.top_class_histogram[channel]
        assert histogram[statistics.classes.index(name)] == 9
        assert statistics.firing_rate[channel] == pytest.approx(1 / 3)


def test_constant_zero_channel_is_dead_and_always_on_channel_is_not_selective(
    statistics,
) -> None:
    assert list(np.flatnonzero(statistics.dead)) == [3]
    assert statistics.firing_rate[3] == 0 and statistics.max[3] == 0
    assert statistics.firing_rate[4] == 1.0
    assert statistics.selectivity[4] == pytest.approx(0.0)
    assert statistics.mean[4] == pytest.approx(1.0)
    assert all(4 not in units for units in statistics.top_units_per_class.values())
    assert statistics.class_mean[:, 4] == pytest.approx([1.0, 1.0, 1.0])


def test_labels_csv_flows_into_statistics(tmp_path: Path) -> None:
    model = load(detector_model(), tmp_path / "models", "detectors")
    data = tmp_path / "flat"
    data.mkdir()
    rng = np.random.default_rng(1)
    rows = ["path,label"]
    for i in range(12):
        red = i % 2 == 0
        pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
        pixels[8:16, 8:16] = (255, 0, 0) if red else (0, 0, int(rng.integers(100, 255)))
        Image.fromarray(pixels).save(data / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{'red' if red else 'blue'}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    from maxact.server.data.datasets import list_image_ids

    ids = list_image_ids(data)
    classes, labels = label_array(data, ids)
    assert classes == ("blue", "red")
    scan = engine(model, ["features"], SIZE, ReduceOptions(k=3), classes)
    scan.run(sources(data, ids), labels)
    stats = scan.reducers["features"].statistics(labels)
    assert stats.selective_channels(0.9)["red"] == [2]
    assert list(stats.class_images) == [6, 6]
