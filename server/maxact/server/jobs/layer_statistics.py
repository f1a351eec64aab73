"""A layer's stored statistics as a typed record, read from the JSON document a scan stores
(`ScanJobs._statistics` writes it) in this one place, so no reader looks values up by key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClassStatistics:
    """What a labelled scan adds per class; `class_mean[j][c]` is None when class j had no
    image. A scan stored by an older server lacks the clipped means (`class_mean_clipped`,
    `class_images` None): the class answer then asks for a new scan."""

    class_mean: list[list[float | None]]
    selectivity: list[float]
    preferred_class: list[int]
    top_units_per_class: dict[str, list[int]]
    class_mean_clipped: list[list[float | None]] | None
    class_images: list[int] | None


@dataclass(frozen=True)
class LayerStatistics:
    """Per channel (index c): the mean and max of the per-image max, the firing rate, dead;
    `classes` are the dataset's class names (empty without labels)."""

    images: int
    mean: list[float]
    max: list[float | None]
    firing_rate: list[float]
    dead: list[bool]
    classes: list[str]
    by_class: ClassStatistics | None
    top_class_histogram: list[list[int]] | None

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> LayerStatistics:
        by_class = None
        if "selectivity" in document:
            by_class = ClassStatistics(
                class_mean=document["class_mean"],
                selectivity=document["selectivity"],
                preferred_class=document["preferred_class"],
                top_units_per_class=document.get("top_units_per_class") or {},
                class_mean_clipped=document.get("class_mean_clipped"),
                class_images=document.get("class_images"),
            )
        return cls(
            images=document["images"],
            mean=document["mean"],
            max=document["max"],
            firing_rate=document["firing_rate"],
            dead=document["dead"],
            classes=document.get("classes") or [],
            by_class=by_class,
            top_class_histogram=document.get("top_class_histogram"),
        )
