"""Class selectivity and contrast, defined once (the scan's statistics and the class answer
both use these).

From m [K, C], the mean over the images of class j of max(0, channel c's per-image response)
(what a ReLU passes on): selectivity follows Morcos et al., "On the importance of single
directions for generalization" (2018), (m_max - m_rest) / (m_max + m_rest) with m_rest the mean
of the other classes' m (0 when both are 0): 0 fires equally for every class, 1 for one class
only. Contrast ranks a class's channels: m[j] minus the mean of the other classes' m, so a
channel that fires for everything tops no class.
"""

from __future__ import annotations

import numpy as np


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
    """[K, C]: m[j][c] minus the mean of the other classes' m[.][c] (K >= 2)."""
    count = m.shape[0]
    contrast: np.ndarray = m - (m.sum(axis=0, keepdims=True) - m) / (count - 1)
    return contrast
