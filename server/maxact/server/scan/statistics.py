"""Per-channel statistics of a layer over a dataset, mergeable exactly (docs/contracts.md).

Everything derives from each image's per-channel response (the channel's max over space, or a
flat tensor's value): mean and max of it, firing rate (fraction of images with response > 0),
dead channels (never fire), and with labels the per-class mean response.

Class selectivity (Morcos et al., "On the importance of single directions for generalization",
2018): SI = (mu_max - mu_rest) / (mu_max + mu_rest) over the per-class means of the response
clipped at 0 (what a ReLU passes on), mu_max the largest class mean, mu_rest the mean of the
other classes' means. 0 = fires equally for every class, 1 = fires for one class only; a
channel that never fires has SI 0. "Top units per class" ranks channels by the contrast
mu_class - mu_rest(class), so a channel that fires for everything does not top every class.

Memory: a fixed number of exact accumulators per channel and per (class, channel), never per
image. Sums are exact (see `exact.py`), so shards merge into exactly the union's statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from maxact.common.selectivity import contrast_of, selectivity_of
from maxact.common.statistics import LayerStatistics
from maxact.server.scan.exact import ExactSums


@dataclass(frozen=True)
class ChannelStatistics:
    """Summary of one layer; arrays are indexed by the layer's channel position."""

    images: int
    mean: np.ndarray  # [C] mean of per-image response
    max: np.ndarray  # [C] max of per-image response (-inf when no image)
    firing_rate: np.ndarray  # [C] fraction of images with response > 0
    dead: np.ndarray  # [C] bool: never fired (and at least one image scanned)
    classes: tuple[str, ...] = ()
    class_images: np.ndarray | None = None  # [K] labelled images per class
    class_mean: np.ndarray | None = None  # [K, C] mean response per class (nan: no image)
    selectivity: np.ndarray | None = None  # [C] class-selectivity index, 0..1
    preferred_class: np.ndarray | None = None  # [C] argmax class of the clipped class means
    top_class_histogram: np.ndarray | None = None  # [C, K] labels of each channel's top-k
    top_units_per_class: dict[str, list[int]] | None = None  # class -> channels, best first
    class_mean_clipped: np.ndarray | None = None  # [K, C] mean of max(0, response) per class

    def document(self) -> LayerStatistics:
        """The record a finished scan stores for this layer (NaN/-inf become None)."""
        base = LayerStatistics(
            images=self.images,
            mean=self.mean.tolist(),
            max=[float(v) if np.isfinite(v) else None for v in self.max],
            firing_rate=self.firing_rate.tolist(),
            dead=self.dead.tolist(),
            classes=list(self.classes),
            top_class_histogram=(
                self.top_class_histogram.tolist() if self.top_class_histogram is not None else None
            ),
        )
        if (
            self.class_mean is None
            or self.selectivity is None
            or self.preferred_class is None
            or self.class_images is None
            or self.class_mean_clipped is None
        ):
            return base
        return replace(
            base,
            class_mean=_with_gaps(self.class_mean),
            class_images=self.class_images.tolist(),
            class_mean_clipped=_with_gaps(self.class_mean_clipped),
            selectivity=self.selectivity.tolist(),
            preferred_class=self.preferred_class.tolist(),
            top_units_per_class=self.top_units_per_class,
        )

    def selective_channels(self, threshold: float = 0.5) -> dict[str, list[int]]:
        """Channels whose SI >= threshold, grouped by the class they prefer."""
        found: dict[str, list[int]] = {name: [] for name in self.classes}
        if self.selectivity is None or self.preferred_class is None:
            return found
        for channel in np.flatnonzero(self.selectivity >= threshold):
            found[self.classes[int(self.preferred_class[channel])]].append(int(channel))
        return found


def _with_gaps(means: np.ndarray) -> list[list[float | None]]:
    """Class means as JSON rows: NaN (no image of the class) becomes None."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in means]


class StatisticsReducer:
    """Accumulates per-image responses [N, C] (with optional class ids, -1 = unlabelled)."""

    def __init__(self, channels: int, classes: tuple[str, ...] = ()) -> None:
        self.channels = channels
        self.classes = tuple(classes)
        self.images = 0
        self.fired = np.zeros(channels, dtype=np.int64)
        self.maximum = np.full(channels, -np.inf, dtype=np.float32)
        self.sums = ExactSums(channels)
        self.class_images = np.zeros(len(self.classes), dtype=np.int64)
        self.class_sums = ExactSums(len(self.classes) * channels) if self.classes else None
        self.class_clipped = ExactSums(len(self.classes) * channels) if self.classes else None

    def update(self, responses: np.ndarray, labels: np.ndarray | None = None) -> None:
        responses = np.asarray(responses, dtype=np.float32)
        if responses.shape[0] == 0:
            return
        self.images += responses.shape[0]
        self.fired += (responses > 0).sum(axis=0)
        np.maximum(
            self.maximum, np.nan_to_num(responses, nan=-np.inf).max(axis=0), out=self.maximum
        )
        self.sums.add_rows(responses)
        if self.class_sums is None or self.class_clipped is None or labels is None:
            return
        labels = np.asarray(labels, dtype=np.int64)
        known = labels >= 0
        if not known.any():
            return
        rows, classes = responses[known], labels[known]
        self.class_images += np.bincount(classes, minlength=len(self.classes))
        cells = classes[:, None] * self.channels + np.arange(self.channels)[None, :]
        self.class_sums.add(cells, rows)
        self.class_clipped.add(cells, np.maximum(rows, 0))

    def merge(self, other: StatisticsReducer) -> None:
        if (other.channels, other.classes) != (self.channels, self.classes):
            raise ValueError("can only merge statistics over the same channels and classes")
        self.images += other.images
        self.fired += other.fired
        np.maximum(self.maximum, other.maximum, out=self.maximum)
        self.sums.merge(other.sums)
        self.class_images += other.class_images
        if self.class_sums is not None and other.class_sums is not None:
            self.class_sums.merge(other.class_sums)
        if self.class_clipped is not None and other.class_clipped is not None:
            self.class_clipped.merge(other.class_clipped)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The accumulated counts and exact sums as plain arrays."""
        state: dict[str, np.ndarray] = {
            "images": np.asarray(self.images, dtype=np.int64),
            "fired": self.fired,
            "maximum": self.maximum,
            "sums": self.sums.limbs,
            "class_images": self.class_images,
        }
        if self.class_sums is not None and self.class_clipped is not None:
            state["class_sums"] = self.class_sums.limbs
            state["class_clipped"] = self.class_clipped.limbs
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore `state_dict()` of a reducer over the same channels and classes."""
        fired = np.asarray(state["fired"])
        if fired.shape != (self.channels,):
            raise ValueError(
                f"statistics state has {fired.shape} channels, expected {self.channels}"
            )
        self.images = int(state["images"])
        self.fired = fired.astype(np.int64)
        self.maximum = np.asarray(state["maximum"]).astype(np.float32)
        self.sums.load_limbs(state["sums"])
        self.class_images = np.asarray(state["class_images"]).astype(np.int64)
        if self.class_images.shape != (len(self.classes),):
            raise ValueError("statistics state was written for other classes")
        if self.class_sums is not None and self.class_clipped is not None:
            self.class_sums.load_limbs(state["class_sums"])
            self.class_clipped.load_limbs(state["class_clipped"])

    def summary(
        self, top_labels: np.ndarray | None = None, units_per_class: int = 5
    ) -> ChannelStatistics:
        """`top_labels` [C, k] are the class ids of each channel's top-k images (-1: none)."""
        images = max(self.images, 1)
        base = {
            "images": self.images,
            "mean": self.sums.values() / images,
            "max": self.maximum.astype(np.float64),
            "firing_rate": self.fired / images,
            "dead": (self.fired == 0) & (self.images > 0),
        }
        if self.class_sums is None or self.class_clipped is None:
            return ChannelStatistics(**base)
        count = len(self.classes)
        per_class = self.class_images[:, None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            class_mean = self.class_sums.values().reshape(count, self.channels) / per_class
            clipped = self.class_clipped.values().reshape(count, self.channels) / per_class
        all_clipped = clipped
        present = self.class_images > 0
        clipped = clipped[present]
        selectivity = np.zeros(self.channels)
        preferred = np.zeros(self.channels, dtype=np.int64)
        tops: dict[str, list[int]] = {name: [] for name in self.classes}
        if clipped.shape[0] >= 2:
            present_ids = np.flatnonzero(present)
            selectivity, best = selectivity_of(clipped)
            preferred = present_ids[best]
            contrasts = contrast_of(clipped)
            for row, class_id in enumerate(present_ids):
                contrast = contrasts[row]
                order = np.lexsort((np.arange(self.channels), -contrast))
                chosen = [int(c) for c in order[:units_per_class] if contrast[c] > 0]
                tops[self.classes[class_id]] = chosen
        histogram = None
        if top_labels is not None:
            histogram = np.zeros((self.channels, count), dtype=np.int64)
            rows, cols = np.nonzero(top_labels >= 0)
            np.add.at(histogram, (rows, top_labels[rows, cols]), 1)
        return ChannelStatistics(
            **base,
            classes=self.classes,
            class_images=self.class_images.copy(),
            class_mean=class_mean,
            selectivity=selectivity,
            preferred_class=preferred,
            top_class_histogram=histogram,
            top_units_per_class=tops,
            class_mean_clipped=all_clipped,
        )
