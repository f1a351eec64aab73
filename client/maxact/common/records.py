"""Small records the server produces and the client receives unchanged (the model and dataset
listings, tensor descriptions, a skipped image): one definition for both sides."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output; -1 marks a dynamic dimension."""

    name: str
    element_type: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSummary:
    name: str
    size_bytes: int
    loaded: bool


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    image_count: int
    labels: tuple[str, ...] = ()
    size_bytes: int = 0
    unreadable: str = ""  # why the server cannot read it (then no images); empty: readable


@dataclass(frozen=True)
class ImageSkipped:
    """An image the server could not read; it was skipped and the scan went on."""

    image: str
    reason: str
