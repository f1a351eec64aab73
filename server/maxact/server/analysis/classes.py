"""The class answer of one layer: which channels fire for a class, which fire for everything,
which classes nothing covers, which classes the layer confuses.

Everything derives from m[j][c], the mean over the images of class j of max(0, channel c's
per-image maximum) (what a ReLU passes on). Selectivity follows Morcos et al., "On the
importance of single directions for generalization" (2018): (m_max - m_rest) / (m_max + m_rest),
m_rest the mean of the other classes' m. Ranking a class's channels by contrast (m[j] minus
the other classes' mean) keeps channels that fire for everything off every class's list.
Pure numpy over the stored statistics, so it is cheap and independent of the scan engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maxact.client.defaults import FIRES_FOR_EVERYTHING_RATE, NON_SELECTIVE_BELOW

CONFUSABLE_PAIRS = 10
CONFUSABLE_MIN_CLASSES = 3  # two classes' centred profiles are always opposite


@dataclass(frozen=True)
class ClassChannel:
    channel: int
    mean: float
    contrast: float
    selectivity: float


@dataclass(frozen=True)
class ClassAnswer:
    name: str
    images: int
    selective_channels: list[int]
    top_channels: list[ClassChannel]
    selective_details: list[ClassChannel]  # by contrast: the strongest selective first


@dataclass(frozen=True)
class LayerClassAnswer:
    channels: int
    dead: list[int]
    non_selective: list[int]
    classes: list[ClassAnswer]
    uncovered: list[str]
    confusable: list[tuple[str, str, float]]


def selectivity_of(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(selectivity [C], preferred class index [C]) of class means m [K, C], K >= 2."""
    count = m.shape[0]
    preferred = m.argmax(axis=0)  # ties: the first class in sorted order
    m_max = m.max(axis=0)
    m_rest = (m.sum(axis=0) - m_max) / (count - 1)
    denominator = m_max + m_rest
    selectivity = np.divide(
        m_max - m_rest, denominator, out=np.zeros(m.shape[1]), where=denominator > 0
    )
    return selectivity, preferred


def contrast_of(m: np.ndarray) -> np.ndarray:
    """[K, C]: m[j][c] minus the mean of the other classes' m[.][c]."""
    count = m.shape[0]
    return m - (m.sum(axis=0, keepdims=True) - m) / (count - 1)


def confusable_pairs(
    m: np.ndarray, names: list[str], limit: int = CONFUSABLE_PAIRS
) -> list[tuple[str, str, float]]:
    """The `limit` class pairs whose centred profiles (m minus the mean over classes, per
    channel) have the highest cosine; ties: the earlier pair in sorted order. A class whose
    centred profile is all zero is similar to nothing (cosine 0). Empty with fewer than
    CONFUSABLE_MIN_CLASSES classes: two centred profiles are always exact opposites (-1),
    which says nothing about the classes."""
    if len(names) < CONFUSABLE_MIN_CLASSES:
        return []
    centred = m - m.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    pairs = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            denominator = norms[a] * norms[b]
            cosine = float(centred[a] @ centred[b] / denominator) if denominator > 0 else 0.0
            pairs.append((-cosine, a, b))
    pairs.sort()
    return [(names[a], names[b], -negative) for negative, a, b in pairs[:limit]]


def _figures(
    channel: int, j: int, m: np.ndarray, contrast: np.ndarray, selectivity: np.ndarray
) -> ClassChannel:
    return ClassChannel(
        channel, float(m[j][channel]), float(contrast[j][channel]), float(selectivity[channel])
    )


def class_answer(
    names: list[str],
    class_images: np.ndarray,
    m: np.ndarray,
    firing_rate: np.ndarray,
    dead: np.ndarray,
    selective_threshold: float = 0.5,
    top: int = 10,
) -> LayerClassAnswer:
    """The answer from the clipped class means m [K, C] of the classes `names` (sorted)."""
    m = np.asarray(m, dtype=np.float64)
    channels = m.shape[1]
    selectivity, preferred = selectivity_of(m)
    contrast = contrast_of(m)
    classes = []
    for j, name in enumerate(names):
        selective = np.flatnonzero((preferred == j) & (selectivity >= selective_threshold))
        order = np.lexsort((np.arange(channels), -contrast[j]))
        best = [int(c) for c in order if contrast[j][c] > 0][:top]
        classes.append(
            ClassAnswer(
                name=name,
                images=int(class_images[j]),
                selective_channels=[int(c) for c in selective],
                top_channels=[_figures(c, j, m, contrast, selectivity) for c in best],
                selective_details=[
                    _figures(int(c), j, m, contrast, selectivity)
                    for c in sorted(selective, key=lambda c: (-contrast[j][c], c))
                ],
            )
        )
    non_selective = np.flatnonzero(
        (np.asarray(firing_rate) >= FIRES_FOR_EVERYTHING_RATE) & (selectivity < NON_SELECTIVE_BELOW)
    )
    return LayerClassAnswer(
        channels=channels,
        dead=[int(c) for c in np.flatnonzero(np.asarray(dead, dtype=bool))],
        non_selective=[int(c) for c in non_selective],
        classes=classes,
        uncovered=[answer.name for answer in classes if not answer.selective_channels],
        confusable=confusable_pairs(m, names),
    )
