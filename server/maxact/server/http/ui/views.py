"""Records of the core as the templates read them: plain values, no behaviour."""

from __future__ import annotations

import time
from dataclasses import dataclass

from maxact.common.defaults import FIRES_FOR_EVERYTHING_RATE, NON_SELECTIVE_BELOW
from maxact.common.statistics import LayerStatistics
from maxact.server.jobs.store import ScanRecord
from maxact.server.models.registry import LayerEntry
from maxact.server.rf.fields import TensorField

TOP_CLASSES = 3


@dataclass(frozen=True)
class ScanView:
    id: str
    state: str
    finished: bool
    model: str
    dataset: str
    layers: tuple[str, ...]
    k: int
    mode: str
    images_done: int
    images_failed: int
    images_total: int
    created: str
    error: str

    @property
    def percent(self) -> float:
        if self.state == "succeeded":
            return 100.0
        return 100.0 * self.images_done / self.images_total if self.images_total else 0.0


def scan_view(record: ScanRecord) -> ScanView:
    error = f"{record.error.reason}: {record.error.message}" if record.error else ""
    return ScanView(
        id=record.id,
        state=record.state.value,
        finished=record.finished,
        model=record.model,
        dataset=record.dataset,
        layers=tuple(record.layers),
        k=record.k,
        mode=record.mode.value,
        images_done=record.images_done,
        images_failed=record.images_failed,
        images_total=record.images_total,
        created=time.strftime("%Y-%m-%d %H:%M", time.gmtime(record.create_time)),
        error=error,
    )


def field_text(field: TensorField | None, error: str = "") -> str:
    """'size 3x3 / stride 1x1 / padding 1x1', as the report writes it."""
    if field is None:
        return f"none ({error})" if error else "none"
    if not field.spatial:
        return "whole image"
    height, width = field.geometry()
    text = (
        f"size {_num(height.size)}x{_num(width.size)} / stride {_num(height.stride)}x"
        f"{_num(width.stride)} / padding {_num(height.padding)}x{_num(width.padding)}"
    )
    return text + (" · global context" if field.global_context else "")


def _num(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else f"{number:.4g}"


@dataclass(frozen=True)
class LayerView:
    name: str
    op: str
    shape: tuple[int, ...]
    field: str
    labels: int  # class names for the channels (a named flat output); 0: none


def layer_view(entry: LayerEntry, labels: int = 0) -> LayerView:
    return LayerView(
        entry.name, entry.op, entry.shape, field_text(entry.field, entry.field_error), labels
    )


@dataclass(frozen=True)
class ChannelRow:
    """One channel of a layer page."""

    channel: int
    label: str
    max: float
    mean: float
    firing: float
    selectivity: float | None
    prefers: str
    dead: bool
    flat: bool  # fires for everything
    classes: tuple[tuple[str, int], ...]  # the classes of its top-k images, most first

    def matches(self, text: str, response_label: str = "") -> bool:
        """Does `text` occur in the channel's number, labels, classes or badges?"""
        words = [f"c{self.channel}", str(self.channel), self.label, response_label, self.prefers]
        words += ["dead"] if self.dead else []
        words += ["non-selective"] if self.flat else []
        words += [name for name, _ in self.classes]
        return text.lower() in " ".join(w for w in words if w).lower()


def channel_rows(stats: LayerStatistics, labels: list[str]) -> list[ChannelRow]:
    rows = []
    for c in range(stats.channels):
        selectivity = stats.selectivity[c] if stats.selectivity is not None else None
        prefers = ""
        if stats.preferred_class is not None and stats.classes:
            prefers = stats.classes[stats.preferred_class[c]]
        rows.append(
            ChannelRow(
                channel=c,
                label=labels[c] if c < len(labels) else "",
                max=stats.max[c] if stats.max[c] is not None else 0.0,  # type: ignore[arg-type]
                mean=stats.mean[c],
                firing=stats.firing_rate[c],
                selectivity=selectivity,
                prefers=prefers,
                dead=stats.dead[c],
                flat=selectivity is not None
                and stats.firing_rate[c] >= FIRES_FOR_EVERYTHING_RATE
                and selectivity < NON_SELECTIVE_BELOW,
                classes=top_classes(stats, c),
            )
        )
    return rows


def top_classes(
    stats: LayerStatistics, channel: int, limit: int = TOP_CLASSES
) -> tuple[tuple[str, int], ...]:
    """The classes of the channel's top-k images, most frequent first (ties: by name)."""
    if stats.top_class_histogram is None or not stats.classes:
        return ()
    counts = zip(stats.classes, stats.top_class_histogram[channel], strict=False)
    ranked = sorted(((n, c) for n, c in counts if c > 0), key=lambda item: (-item[1], item[0]))
    return tuple(ranked[:limit])
