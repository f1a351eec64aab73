"""The response analyses on their own, over matrices that exercise every branch: small
classes (scipy's exact Mann-Whitney test), ties, unlabelled images, NaN rows (unreadable
images), columns read in several runs; against scikit-learn, scipy and numpy per column."""

from __future__ import annotations

import numpy as np
import pytest

from maxact.server.analysis import responses as analysis
from tests.responses_world import oracle_label, oracle_similar

CLASSES = ("a", "b", "c")


def _matrix(rows: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0, 1, (rows, 9)).astype(np.float32)
    if ties:
        matrix = np.round(matrix * 2) / 2  # many equal values
    matrix[:, 4] = 0.25  # constant
    labels = rng.integers(-1, len(CLASSES), rows)  # -1: unlabelled
    matrix[labels == 1, 2] += 3  # a detector of class b
    return matrix, labels


@pytest.mark.parametrize(("rows", "ties"), [(14, False), (14, True), (300, True), (300, False)])
def test_labels_equal_scikit_learn_and_scipy_per_column(
    rows: int, ties: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(analysis, "CHUNK_VALUES", rows * 2)  # runs of two columns
    matrix, labels = _matrix(rows, rows + ties, ties)
    found = analysis.channel_labels(matrix, labels, CLASSES, 5, range(matrix.shape[1]))
    inside = labels >= 0
    for answer in found:
        values = matrix[:, answer.channel]
        label, auc, p_value, _ = oracle_label(values[inside], labels[inside], 5, CLASSES)
        assert answer.label == ("" if answer.channel == 4 else label)
        assert answer.auc == pytest.approx(auc, abs=1e-12)
        assert answer.p_value == pytest.approx(p_value, rel=1e-9, abs=1e-300)
        top = sorted(range(rows), key=lambda i: (-values[i], i))[:5]
        assert answer.purity == pytest.approx(np.mean(labels[top] == CLASSES.index(label)))


def test_rows_of_unreadable_images_are_left_out_of_every_answer() -> None:
    matrix, labels = _matrix(60, 3, True)
    with_nan = matrix.copy()
    with_nan[[5, 17, 40]] = np.nan
    keep = np.isfinite(with_nan[:, 0])
    found = analysis.channel_labels(with_nan, labels, CLASSES, 5, range(9))
    expected = analysis.channel_labels(matrix[keep], labels[keep], CLASSES, 5, range(9))
    assert found == expected
    similar = analysis.similar_channels(with_nan, 2, 3)
    expected_similar = oracle_similar(matrix[keep], 2, 3)
    assert [c for c, _ in similar] == [c for c, _ in expected_similar]
    np.testing.assert_allclose([r for _, r in similar], [r for _, r in expected_similar])
    edges, counts = analysis.histogram(analysis.column(with_nan, 2), 6)
    assert counts.sum() == 57 and np.allclose(edges, np.histogram(matrix[keep, 2], 6)[1])
    value, images, _ = analysis.quantile_examples(analysis.column(with_nan, 2), 0.5, 4)
    assert value == pytest.approx(np.quantile(matrix[keep, 2].astype(np.float64), 0.5))
    assert not set(images.tolist()) & {5, 17, 40}
