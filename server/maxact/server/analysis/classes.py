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

from maxact.common.class_answer import ClassAnswer, ClassChannel, ConfusablePair
from maxact.common.defaults import FIRES_FOR_EVERYTHING_RATE, NON_SELECTIVE_BELOW
from maxact.common.selectivity import contrast_of, selectivity_of

CONFUSABLE_PAIRS = 10


@dataclass(frozen=True)
class LayerClassAnswer:
    channels: int
    dead: list[int]
    non_selective: list[int]
    classes: list[ClassAnswer]
    uncovered: list[str]
    confusable: list[ConfusablePair]


def confusable_pairs(
    m: np.ndarray, names: list[str], limit: int = CONFUSABLE_PAIRS
) -> list[ConfusablePair]:
    """The `limit` class pairs whose centred profiles (m minus the mean over classes, per
    channel) have the highest cosine; ties: the earlier pair in sorted order. A class whose
    centred profile is all zero is similar to nothing (cosine 0)."""
    centred = m - m.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    pairs = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            denominator = norms[a] * norms[b]
            cosine = float(centred[a] @ centred[b] / denominator) if denominator > 0 else 0.0
            pairs.append((-cosine, a, b))
    pairs.sort()
    return [ConfusablePair((names[a], names[b]), -negative) for negative, a, b in pairs[:limit]]


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
                selective_channels=tuple(int(c) for c in selective),
                top_channels=tuple(_figures(c, j, m, contrast, selectivity) for c in best),
                selective=tuple(
                    _figures(int(c), j, m, contrast, selectivity)
                    for c in sorted(selective, key=lambda c: (-contrast[j][c], c))
                ),
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
