"""The records of the class answer (`maxact classes` / `class`): one definition for the server
that computes them and the client that receives them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassChannel:
    """A channel seen from one class: `mean` = m[class][c], the class's mean of max(0, the
    channel's per-image maximum); `contrast` = that minus the other classes' mean."""

    channel: int
    mean: float
    contrast: float
    selectivity: float


@dataclass(frozen=True)
class ClassAnswer:
    name: str
    images: int
    selective_channels: tuple[int, ...]
    top_channels: tuple[ClassChannel, ...]
    selective: tuple[ClassChannel, ...] = ()  # the selective channels, by contrast


@dataclass(frozen=True)
class ConfusablePair:
    classes: tuple[str, str]
    similarity: float
