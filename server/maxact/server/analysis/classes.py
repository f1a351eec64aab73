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
PAIR_BLOCK = 256  # rows of the cosine matrix computed at once
CONFUSABLE_MIN_CLASSES = 3  # two classes' centred profiles are always opposite


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
    centred profile is all zero is similar to nothing (cosine 0). Empty with fewer than
    CONFUSABLE_MIN_CLASSES classes: two centred profiles are always exact opposites (-1),
    which says nothing about the classes.

    One matrix product per block of rows (bounded memory for many classes: a block is
    PAIR_BLOCK x K cosines); each block keeps its best `limit` pairs and the ties at the cut,
    so the merge is exact."""
    if len(names) < CONFUSABLE_MIN_CLASSES:
        return []
    count = m.shape[0]
    centred = m - m.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    unit = centred / np.where(norms > 0, norms, 1.0)[:, None]
    kept: list[tuple[np.ndarray, np.ndarray]] = []  # (flat pair index a * count + b, cosine)
    columns = np.arange(count)
    for start in range(0, count, PAIR_BLOCK):
        rows = np.arange(start, min(start + PAIR_BLOCK, count))
        cosines = unit[rows] @ unit.T
        np.putmask(cosines, columns[None, :] <= rows[:, None], -np.inf)  # a < b only
        flat = cosines.ravel()
        if flat.size > limit:
            cut = flat[np.argpartition(flat, flat.size - limit)[flat.size - limit]]
            chosen = np.flatnonzero((flat >= cut) & (flat > -np.inf))
        else:
            chosen = np.flatnonzero(flat > -np.inf)
        kept.append((start * count + chosen, flat[chosen]))
    if not kept:
        return []
    index = np.concatenate([i for i, _ in kept])
    values = np.concatenate([v for _, v in kept])
    order = np.lexsort((index, -values))[:limit]  # ties: the earlier pair (a, then b)
    return [
        ConfusablePair(
            (names[int(index[i]) // count], names[int(index[i]) % count]), float(values[i])
        )
        for i in order
    ]


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
    count, channels = m.shape
    selectivity, preferred = selectivity_of(m)
    contrast = contrast_of(m)
    # every class's channels by contrast at once (ties: lower channel); positives come first
    order = np.lexsort((np.broadcast_to(np.arange(channels), m.shape), -contrast), axis=-1)
    positives = np.minimum((contrast > 0).sum(axis=1), top)
    selective_of: list[list[int]] = [[] for _ in range(count)]
    for c in np.flatnonzero(selectivity >= selective_threshold).tolist():
        selective_of[int(preferred[c])].append(c)  # each channel prefers one class
    means, contrasts, selectivities = m.tolist(), contrast.tolist(), selectivity.tolist()

    def figures(channel: int, j: int) -> ClassChannel:
        return ClassChannel(
            channel, means[j][channel], contrasts[j][channel], selectivities[channel]
        )

    classes = []
    for j, name in enumerate(names):
        selective = selective_of[j]
        classes.append(
            ClassAnswer(
                name=name,
                images=int(class_images[j]),
                selective_channels=tuple(selective),
                top_channels=tuple(figures(c, j) for c in order[j, : positives[j]].tolist()),
                selective=tuple(
                    figures(c, j) for c in sorted(selective, key=lambda c: (-contrasts[j][c], c))
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
