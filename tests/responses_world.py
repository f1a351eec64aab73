"""A labelled world with planted detectors for the per-image responses tests, and the
independent answers: plain onnxruntime for the matrix; numpy, scipy and scikit-learn for what
is computed from it.

Model `faces` (conv 8x8, stride 2, 32x32 input, then ReLU): channel 0 fires on pure red
(R - G - B > 0.5, the planted "face" detector), channel 1 is the constant 1, channels 2..7
are random filters (so some correlate with each other and ties at 0 appear after the ReLU).
Dataset `faces`: dark noise images in class folders cat/, car/, face/; only the face images
carry a red square.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from scipy import stats
from sklearn.metrics import roc_auc_score

from maxact.client import Client
from tests.onnx_models import finish, layer_outputs, save

SIZE = 32
CHANNELS = 8
CLASSES = ("car", "cat", "face")
LAYERS = ("conv", "relu")
FACE, CONSTANT = 0, 1


def faces_model() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.05, (CHANNELS, 3, 8, 8)).astype(np.float32)
    b = rng.normal(0, 0.1, (CHANNELS,)).astype(np.float32)
    w[FACE] = 0
    w[FACE, :, 0, 0] = [1, -1, -1]
    b[FACE] = -0.5
    w[CONSTANT], b[CONSTANT] = 0, 1
    graph = helper.make_graph(
        [
            helper.make_node(
                "Conv", ["image", "w", "b"], ["conv"], kernel_shape=[8, 8], strides=[2, 2]
            ),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("GlobalMaxPool", ["relu"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "faces",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CHANNELS])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return finish(graph)


def write_world(model_root: Path, data_root: Path, per_class: int = 12, seed: int = 3) -> None:
    """Model `faces` and dataset `faces` (per_class images per class)."""
    save(faces_model(), model_root, "faces")
    rng = np.random.default_rng(seed)
    for i in range(per_class * len(CLASSES)):
        name = CLASSES[i % len(CLASSES)]
        pixels = rng.integers(0, 110, (SIZE, SIZE, 3), dtype=np.uint8)
        if name == "face":
            y, x = rng.integers(0, SIZE - 9, 2)  # a window of the stride-2 conv starts in it
            pixels[y : y + 6, x : x + 6] = (255, 0, 0)
        path = data_root / "faces" / name / f"img_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


def dataset_order(data_root: Path) -> tuple[list[str], np.ndarray]:
    """The image ids in dataset order and each one's class id."""
    ids = sorted(
        str(p.relative_to(data_root / "faces")).replace("\\", "/")
        for p in (data_root / "faces").rglob("*.png")
    )
    return ids, np.asarray([CLASSES.index(i.split("/")[0]) for i in ids])


def oracle_matrix(data_root: Path, layer: str) -> np.ndarray:
    """R[image, channel] by plain onnxruntime: the channel's maximum over space."""
    ids, _ = dataset_order(data_root)
    images = np.stack([np.asarray(Image.open(data_root / "faces" / i).convert("RGB")) for i in ids])
    inputs = (images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)
    maps = layer_outputs(faces_model(), [layer], inputs)[layer]
    matrix: np.ndarray = maps.max(axis=(2, 3))
    return matrix


def oracle_histogram(values: np.ndarray, bins: int) -> tuple[list[float], list[int]]:
    counts, edges = np.histogram(values.astype(np.float64), bins=bins)
    return edges.tolist(), counts.tolist()


def oracle_quantile(values: np.ndarray, q: float, k: int) -> tuple[float, list[int]]:
    """numpy's linear quantile and the k nearest images, ties: the earlier image."""
    values = values.astype(np.float64)
    value = float(np.quantile(values, q))
    distance = np.abs(values - value)
    order = sorted(range(len(values)), key=lambda i: (distance[i], i))
    return value, order[:k]


def oracle_label(
    values: np.ndarray, labels: np.ndarray, k: int, classes: tuple[str, ...] = CLASSES
) -> tuple[str, float, float, float]:
    """(label, AUC, one-sided Mann-Whitney p, top-k purity) of one channel."""
    values = values.astype(np.float64)
    aucs = [roc_auc_score(labels == j, values) for j in range(len(classes))]
    best = int(np.argmax(aucs))
    p = stats.mannwhitneyu(
        values[labels == best], values[labels != best], alternative="greater"
    ).pvalue
    top = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
    purity = float(np.mean(labels[top] == best))
    return classes[best], float(aucs[best]), float(p), purity


def check_against_oracles(
    client: Client,
    scan_id: str,
    layer: str,
    matrix: np.ndarray,
    labels: np.ndarray,
    k: int,
    classes: tuple[str, ...],
) -> None:
    """The scan's labels, similar channels and a histogram equal the independent answers
    computed from `matrix` (the oracle's R[image, channel])."""
    for found in client.responses.labels(scan_id, layer):
        values = matrix[:, found.channel]
        label, auc, p_value, purity = oracle_label(values, labels, k, classes)
        if np.ptp(values) > 0:
            assert found.label == label, found
        assert found.auc == pytest.approx(auc, abs=1e-9)
        assert found.p_value == pytest.approx(p_value, rel=1e-6, abs=1e-300)
        assert found.purity == pytest.approx(purity)
    for channel in range(0, matrix.shape[1], max(1, matrix.shape[1] // 4)):
        similar = client.responses.similar(scan_id, layer, channel, top=5)
        expected = oracle_similar(matrix, channel, 5)
        assert [s.channel for s in similar] == [c for c, _ in expected]
        found_h = client.responses.histogram(scan_id, layer, channel, bins=9)
        edges, counts = oracle_histogram(matrix[:, channel], 9)
        assert list(found_h.counts) == counts
        np.testing.assert_allclose(found_h.edges, edges, rtol=1e-6)


def oracle_similar(matrix: np.ndarray, channel: int, top: int) -> list[tuple[int, float]]:
    """Pearson with every non-constant other channel, most first (ties: lower channel)."""
    matrix = matrix.astype(np.float64)
    if np.ptp(matrix[:, channel]) == 0:
        return []
    found = [
        (other, float(stats.pearsonr(matrix[:, channel], matrix[:, other]).statistic))
        for other in range(matrix.shape[1])
        if other != channel and np.ptp(matrix[:, other]) > 0
    ]
    return sorted(found, key=lambda pair: (-pair[1], pair[0]))[:top]
