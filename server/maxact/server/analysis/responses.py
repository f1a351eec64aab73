"""Questions answered exactly from a responses matrix R[image, channel] (each image's maximum
response per channel): a channel's histogram, its quantile examples, the class it separates
best (ROC AUC, Mann-Whitney p, top-k purity) and the channels that correlate with it.

The matrix may be a read-only memory map far larger than memory: every function reads one
column or a run of columns at a time (`CHUNK_VALUES` values), never the whole matrix. NaN
marks an image without a response (it could not be read); it is left out of every answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as scipy_stats

# values read at once (float64 after conversion: 32 MiB)
CHUNK_VALUES = 1 << 22


@dataclass(frozen=True)
class ChannelLabel:
    """The class a channel's responses separate best from the other classes ("" and NaN
    figures when none can be told apart: fewer than two classes, no responses)."""

    channel: int
    label: str
    auc: float
    p_value: float
    purity: float


def column(matrix: np.ndarray, channel: int) -> np.ndarray:
    """R[:, channel] as float64 (one contiguous read of a column-major file)."""
    return np.asarray(matrix[:, channel], dtype=np.float64)


def column_runs(
    matrix: np.ndarray, channels: Sequence[int]
) -> Iterator[tuple[list[int], np.ndarray]]:
    """(channels, R[:, channels] as float64) for runs of consecutive channels, each run at
    most CHUNK_VALUES values."""
    width = max(1, CHUNK_VALUES // max(1, matrix.shape[0]))
    run: list[int] = []
    for channel in [*channels, -1]:
        if run and (channel != run[-1] + 1 or len(run) == width or channel < 0):
            yield run, np.asarray(matrix[:, run[0] : run[-1] + 1], dtype=np.float64)
            run = []
        if channel >= 0:
            run.append(channel)


def histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(edges [bins + 1], counts [bins]) of the finite values, numpy's rule (half-open bins,
    the last one closed; a constant column gets the range value +- 0.5)."""
    counts, edges = np.histogram(values[np.isfinite(values)], bins=bins)
    return edges, counts


def quantile_examples(
    values: np.ndarray, quantile: float, k: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """(the quantile's value, the k image indices nearest it, their values): numpy's linear
    quantile of the finite values; nearest first, ties: the earlier image."""
    images = np.flatnonzero(np.isfinite(values))
    if images.size == 0:
        return float("nan"), images, values[images]
    finite = values[images]
    value = float(np.quantile(finite, quantile))
    order = np.argsort(np.abs(finite - value), kind="stable")[:k]
    return value, images[order], finite[order]


def similar_channels(matrix: np.ndarray, channel: int, top: int) -> list[tuple[int, float]]:
    """The `top` channels whose responses correlate most with `channel`'s (Pearson over the
    images where it has a response), most first, ties: the lower channel. A constant
    channel is similar to none and none is similar to it."""
    x = column(matrix, channel)
    rows = np.isfinite(x)
    x = x[rows]
    if x.size < 2 or np.ptp(x) == 0:
        return []
    centred = x - x.mean()
    norm = np.sqrt(centred @ centred)
    found: list[tuple[int, float]] = []
    every_row = bool(rows.all())
    for run, block in column_runs(matrix, range(matrix.shape[1])):
        if not every_row:
            block = block[rows]
        spread = np.ptp(block, axis=0)
        means = block.mean(axis=0)
        # each channel's sum of squared deviations, and `centred @ block` below equals
        # `centred @ (block - means)` (centred sums to 0): no centred copy of the block
        deviations = np.einsum("ij,ij->j", block, block) - block.shape[0] * means * means
        norms = np.sqrt(np.maximum(deviations, 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            correlation = (centred @ block) / (norm * norms)
        for other, value, width in zip(run, correlation, spread, strict=True):
            if other != channel and width > 0 and np.isfinite(value):
                found.append((other, float(np.clip(value, -1.0, 1.0))))
    found.sort(key=lambda pair: (-pair[1], pair[0]))
    return found[:top]


def channel_labels(
    matrix: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    k: int,
    channels: Sequence[int],
) -> list[ChannelLabel]:
    """Per channel, the class j whose images its responses separate best from the other
    labelled images: the largest ROC AUC (ties by average rank, as scikit-learn's
    roc_auc_score; ties between classes: the first), the one-sided Mann-Whitney p-value of
    class j's responses being greater (as scipy.stats.mannwhitneyu gives it), and the share
    of the channel's top-k images (ties: earlier image) that are of class j. `labels`: the
    class id of each image (-1: none). A constant channel gets no label (its figures are
    still given: AUC 0.5)."""
    labels = np.asarray(labels, dtype=np.int64)
    answers: list[ChannelLabel] = []
    for run, block in column_runs(matrix, channels):
        clean = np.isfinite(block).all(axis=0)
        if clean.all():
            answers.extend(_labels_of_block(run, block, labels, classes, k))
            continue
        for position, channel in enumerate(run):
            part = block[:, position : position + 1]
            if clean[position]:
                answers.extend(_labels_of_block([channel], part, labels, classes, k))
            else:
                rows = np.isfinite(part[:, 0])
                (answer,) = _labels_of_block([channel], part[rows], labels[rows], classes, k)
                answers.append(answer)
    return answers


def _labels_of_block(
    run: list[int],
    block: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    k: int,
) -> list[ChannelLabel]:
    """`channel_labels` of a block without NaN (its rows in dataset order): one sort per
    column gives the average ranks and the tie sizes of the AUC and the Mann-Whitney test."""
    labelled = labels >= 0
    y = labels[labelled]
    x = block[labelled]
    n = y.size
    sizes = np.bincount(y, minlength=len(classes)).astype(np.float64)
    rest = n - sizes
    usable = (sizes > 0) & (rest > 0)
    if not usable.any():
        return [ChannelLabel(c, "", float("nan"), float("nan"), float("nan")) for c in run]
    ranks, tie_term = _average_ranks(x)
    members = (y[None, :] == np.arange(len(classes))[:, None]).astype(np.float64)
    rank_sums = members @ ranks  # [classes, columns]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sums - (sizes * (sizes + 1) / 2)[:, None]) / (sizes * rest)[:, None]
    auc[~usable] = -np.inf
    best = np.argmax(auc, axis=0)  # first class on ties
    columns = np.arange(block.shape[1])
    p_values = _greater_p_values(
        rank_sums[best, columns], sizes[best], rest[best], tie_term, n, x, y, best
    )
    purity = _top_k_purity(block, labels, best, k)
    constant = np.ptp(x, axis=0) == 0  # responds the same to every image: labels nothing
    return [
        ChannelLabel(
            channel,
            "" if constant[i] else classes[int(best[i])],
            float(auc[best[i], i]),
            float(p_values[i]),
            float(purity[i]),
        )
        for i, channel in enumerate(run)
    ]


def _average_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1-based average ranks of each column, sum over tie groups of t^3 - t per column);
    worked on the transpose, each column one contiguous row."""
    rows = np.ascontiguousarray(x.T)
    n = rows.shape[1]
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    index = np.arange(n)[None, :]
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(ordered.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, index, n)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(rows.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=1)
    group = (last - first + 1).astype(np.float64)
    tie_term = ((group**2) - 1).sum(axis=1)  # each group of t counted t times: t^3 - t
    return ranks.T, tie_term


def _greater_p_values(
    rank_sum: np.ndarray,
    n1: np.ndarray,
    n2: np.ndarray,
    tie_term: np.ndarray,
    n: int,
    x: np.ndarray,
    y: np.ndarray,
    best: np.ndarray,
) -> np.ndarray:
    """scipy.stats.mannwhitneyu(class, rest, alternative="greater").pvalue per column: its
    normal approximation with tie and continuity corrections, computed here for all columns;
    the columns scipy would test exactly (a sample of at most 8, no ties) go to scipy."""
    u1 = rank_sum - n1 * (n1 + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        z = (u1 - n1 * n2 / 2 - 0.5) / s
    p: np.ndarray = np.clip(special.ndtr(-z), 0.0, 1.0)
    exact = ((n1 <= 8) | (n2 <= 8)) & (tie_term == 0)
    for column in np.flatnonzero(exact):
        inside = y == best[column]
        values = x[:, column]
        result = scipy_stats.mannwhitneyu(
            values[inside], values[~inside], alternative="greater", method="auto"
        )
        p[column] = result.pvalue
    return p


def _top_k_purity(block: np.ndarray, labels: np.ndarray, best: np.ndarray, k: int) -> np.ndarray:
    """Per column, the share of its top-k rows (largest first, ties: the earlier row) whose
    label is the column's `best` class; linear time (a partition, not a sort)."""
    n = block.shape[0]
    k = min(k, n)
    threshold = -np.partition(-block, k - 1, axis=0)[k - 1]  # the k-th largest value
    above = block > threshold
    at = block == threshold
    needed = k - above.sum(axis=0)
    chosen = above | (at & (np.cumsum(at, axis=0) <= needed))
    share: np.ndarray = (chosen & (labels[:, None] == best[None, :])).sum(axis=0) / k
    return share
