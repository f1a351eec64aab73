"""How two scans of the same dataset differ, channel by channel (e.g. two checkpoints).

A channel whose top-k images are the same set in both scans still looks for the same thing;
a low overlap says what it responds to has changed. Firing rate and mean per-image maximum
give the size of the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChannelChange:
    channel: int
    overlap: float
    firing_rate: tuple[float, float]
    mean: tuple[float, float]


def compare_channels(
    top_a: Sequence[Sequence[str]],
    top_b: Sequence[Sequence[str]],
    k: int,
    firing_rate: tuple[Sequence[float], Sequence[float]],
    mean: tuple[Sequence[float], Sequence[float]],
) -> list[ChannelChange]:
    """Per channel overlap = |top-k images of a ∩ of b| / k; most changed first (lowest
    overlap, ties: lower channel). `top_a[c]` are channel c's top images, best first."""
    changes = []
    for channel, (images_a, images_b) in enumerate(zip(top_a, top_b, strict=True)):
        shared = set(images_a[:k]) & set(images_b[:k])
        changes.append(
            ChannelChange(
                channel=channel,
                overlap=len(shared) / k if k else 1.0,
                firing_rate=(float(firing_rate[0][channel]), float(firing_rate[1][channel])),
                mean=(float(mean[0][channel]), float(mean[1][channel])),
            )
        )
    changes.sort(key=lambda change: (change.overlap, change.channel))
    return changes
