"""The statistics a finished scan keeps per layer, as one typed record: the scan writes it, the
store keeps its JSON, the neuron and class questions read its fields (not string keys).

The JSON form is the one stored since the first release (same keys, same order, optional
keys left out when absent), so stores written by older servers read back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ClassMeans = list[list[float | None]]  # [K, C]; None: no image of that class


@dataclass(frozen=True)
class LayerStatistics:
    """Per-channel statistics of one layer; lists are indexed by channel position (class
    lists by the index in `classes`, sorted names)."""

    images: int
    mean: list[float]  # mean of the per-image response (the channel's max over space)
    max: list[float | None]  # max of it (None: no image)
    firing_rate: list[float]  # fraction of images with response > 0
    dead: list[bool]  # never fired
    classes: list[str] = field(default_factory=list)  # empty: the dataset has no labels
    # with labels:
    class_mean: ClassMeans | None = None  # mean response per class
    class_images: list[int] | None = None  # labelled images per class
    class_mean_clipped: ClassMeans | None = None  # m[j][c]: mean of max(0, response)
    selectivity: list[float] | None = None  # class-selectivity index, 0..1
    preferred_class: list[int] | None = None  # the class of the largest clipped mean
    top_units_per_class: dict[str, list[int]] | None = None  # class -> channels, best first
    top_class_histogram: list[list[int]] | None = None  # [C, K] labels of each top-k

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def labelled(self) -> bool:
        """Selectivity and per-class means were computed (a labelled dataset)."""
        return self.selectivity is not None and self.preferred_class is not None

    def to_json(self) -> dict[str, Any]:
        """The stored document: every set field, in declaration order."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> LayerStatistics:
        """Read a stored document back; keys this version does not know are ignored. A document
        that is not a statistics record (not an object, a base key missing, selectivity without
        the class means it was computed from) raises TypeError, KeyError or AttributeError, which
        readers report as a damaged row."""
        known = {f.name for f in fields(cls)}
        record = cls(**{key: value for key, value in document.items() if key in known})
        if record.selectivity is not None and (
            record.class_mean is None or record.preferred_class is None
        ):
            raise KeyError("selectivity without class_mean and preferred_class")
        return record
