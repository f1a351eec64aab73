"""Typed, immutable results, so callers never depend on the generated protos: the client's
results (maxact.client.types) and what the server's HTTP face builds its documents from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from maxact.common.class_answer import ClassAnswer as ClassAnswer
from maxact.common.class_answer import ClassChannel as ClassChannel
from maxact.common.class_answer import ConfusablePair as ConfusablePair
from maxact.common.kinds import ScanState, TopKMode
from maxact.common.preprocessing import Preprocessing
from maxact.common.records import (  # re-exported: the client's typed results
    DatasetSummary as DatasetSummary,
)
from maxact.common.records import (
    ImageSkipped as ImageSkipped,
)
from maxact.common.records import (
    ModelSummary as ModelSummary,
)
from maxact.common.records import (
    TensorInfo as TensorInfo,
)
from maxact.common.resources import scan_name

Interval = tuple[int, int]
"""Half-open [start, stop) of model-input pixels."""

BoxYX = tuple[int, int, int, int]
"""Half-open box (y0, x0, y1, x1) in pixels."""


@dataclass(frozen=True)
class FieldGeometry:
    """Per axis (height, width): unit i covers [i*stride - padding, i*stride - padding + size)."""

    size: tuple[float, float]
    stride: tuple[float, float]
    padding: tuple[float, float]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels first..last (inclusive) that share one receptive field."""

    first_channel: int
    last_channel: int
    geometry: FieldGeometry
    # one interval per output row / column: hundreds in early layers, so not in the repr
    rows: tuple[Interval, ...] = field(repr=False)
    cols: tuple[Interval, ...] = field(repr=False)


@dataclass(frozen=True)
class TokenGrid:
    """A token sequence's grid: `prefix` tokens (CLS, registers) first, then the grid."""

    height: int
    width: int
    prefix: int


@dataclass(frozen=True)
class ReceptiveField:
    """The field of a tensor for a concrete input size; the geometry is the union of groups."""

    spatial: bool
    geometry: FieldGeometry
    channel_groups: tuple[ChannelGroup, ...]
    global_context: bool
    rows: tuple[Interval, ...] = field(repr=False)
    cols: tuple[Interval, ...] = field(repr=False)
    tokens: TokenGrid | None = None

    def __repr__(self) -> str:
        """One line in a REPL: the geometry and how many rows / columns / groups there are."""
        g = self.geometry
        return (
            f"ReceptiveField(spatial={self.spatial}, size={g.size}, stride={g.stride}, "
            f"padding={g.padding}, channel_groups={len(self.channel_groups)}, "
            f"global_context={self.global_context}, rows=<{len(self.rows)} intervals>, "
            f"cols=<{len(self.cols)} intervals>"
            + (f", tokens={self.tokens}" if self.tokens is not None else "")
            + ")"
        )


@dataclass(frozen=True)
class LayerInfo:
    """A tensor a neuron can be chosen from; receptive_field is None when field_error says why."""

    name: str
    op: str
    shape: tuple[int, ...]
    receptive_field: ReceptiveField | None
    field_error: str = ""

    @property
    def global_context(self) -> bool:
        return self.receptive_field is not None and self.receptive_field.global_context

    @property
    def has_spatial_field(self) -> bool:
        """True when patches can be cut for this layer (a spatial, derivable field)."""
        rf = self.receptive_field
        return rf is not None and rf.spatial and not self.field_error


@dataclass(frozen=True)
class ModelInfo:
    """A described model: its inputs, default preprocessing and layer catalogue."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    default_preprocessing: Preprocessing
    input_height: int
    input_width: int
    layers: tuple[LayerInfo, ...]

    def layer(self, name: str) -> LayerInfo:
        """The layer called name; KeyError names it when it is not in the catalogue."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"model {self.name!r} has no layer {name!r}")


@dataclass(frozen=True)
class FieldInfo:
    """The receptive field of one layer (and, with a unit, that unit's exact input box)."""

    model: str
    layer: str
    input_name: str
    input_height: int
    input_width: int
    shape: tuple[int, ...]
    receptive_field: ReceptiveField
    box: BoxYX | None = None
    box_unclipped: BoxYX | None = None

    @property
    def geometry(self) -> FieldGeometry:
        return self.receptive_field.geometry

    @property
    def channel_groups(self) -> tuple[ChannelGroup, ...]:
        return self.receptive_field.channel_groups

    @property
    def global_context(self) -> bool:
        return self.receptive_field.global_context

    @property
    def rows(self) -> tuple[Interval, ...]:
        return self.receptive_field.rows

    @property
    def cols(self) -> tuple[Interval, ...]:
        return self.receptive_field.cols


@dataclass(frozen=True)
class Hit:
    """One ranked response; box is in ORIGINAL image pixels, input_box in model-input pixels."""

    rank: int
    image: str
    score: float
    unit: tuple[int, int]
    box: BoxYX
    input_box: BoxYX
    channel: int


@dataclass(frozen=True)
class Progress:
    images_done: int
    images_total: int
    images_failed: int = 0
    # set on the first event when the model runs on built-in default preprocessing
    preprocessing_warning: str = ""


@dataclass(frozen=True)
class PartialTopK:
    """The running top-k so far (no patches yet)."""

    hits: tuple[Hit, ...]
    images_done: int


@dataclass(frozen=True)
class Patch:
    """A final hit with the PNG bytes of its patch rendered from the original image.

    `patch_box`: the region the PNG shows, in original pixels (unlike `hit.box` not clipped:
    the whole receptive field in rf/heatmap renders, the mask's bounding box in mask renders);
    `clipped_fraction`: the share of it outside the image (shown neutral grey)."""

    hit: Hit
    png: bytes = field(repr=False)
    patch_box: BoxYX | None = None
    clipped_fraction: float = 0.0


@dataclass(frozen=True)
class Done:
    images_scanned: int
    images_failed: int
    k: int
    mode: str  # "image" | "position"
    preprocessing: Preprocessing | None = None  # what the server actually used
    # set when the model ran on built-in default preprocessing (no sidecar, no metadata)
    preprocessing_warning: str = ""


TopKEvent = Progress | PartialTopK | Patch | ImageSkipped | Done


@dataclass(frozen=True)
class TopKResult:
    """The outcome of a finished top-k stream: the patches best first, and the skipped images."""

    model: str
    layer: str
    channel: int
    k: int
    mode: str
    bottom: bool
    images_scanned: int
    images_failed: int
    patches: tuple[Patch, ...]
    skipped: tuple[ImageSkipped, ...] = ()
    preprocessing: Preprocessing | None = None  # what the server actually used
    preprocessing_warning: str = ""

    @property
    def hits(self) -> tuple[Hit, ...]:
        return tuple(p.hit for p in self.patches)


# ---------------------------------------------------------------- class answers, comparisons


@dataclass(frozen=True)
class LayerClassAnswer:
    """The class questions answered for one layer of a finished, labelled scan."""

    scan: str
    layer: str
    images_scanned: int
    channels: int
    dead: tuple[int, ...]
    non_selective: tuple[int, ...]
    classes: tuple[ClassAnswer, ...]
    uncovered: tuple[str, ...]
    confusable: tuple[ConfusablePair, ...]

    def of(self, name: str) -> ClassAnswer:
        for answer in self.classes:
            if answer.name == name:
                return answer
        raise KeyError(f"no class {name!r}")


@dataclass(frozen=True)
class ClassChannelPatches:
    channel: ClassChannel
    patches: tuple[Patch, ...]


@dataclass(frozen=True)
class ClassChannels:
    """One class's top channels (by contrast), each with its top-k patches."""

    scan: str
    layer: str
    class_name: str
    images: int
    channels: tuple[ClassChannelPatches, ...]


@dataclass(frozen=True)
class ChannelChange:
    channel: int
    overlap: float
    firing_rate: tuple[float, float]
    mean: tuple[float, float]


@dataclass(frozen=True)
class ScanComparison:
    """Two scans of one dataset, channel by channel, most changed first."""

    a: str
    b: str
    layer: str
    k: int
    channels: tuple[ChannelChange, ...]


@dataclass(frozen=True)
class ClassNames:
    """The names of the channels of a model's flat output (`layer`); empty when unnamed."""

    layer: str = ""
    names: tuple[str, ...] = ()

    def label(self, layer: str, channel: int) -> str | None:
        if layer == self.layer and 0 <= channel < len(self.names):
            return self.names[channel]
        return None


@dataclass(frozen=True)
class ScanSummary:
    """A persisted scan as the API describes it; `id` is what the CLI prints, `name` is
    "scans/{id}". (The client's ScanInfo adds the failure as an exception.)"""

    id: str
    state: ScanState
    images_done: int
    images_total: int
    images_failed: int
    model: str
    layers: tuple[str, ...]
    dataset: str
    k: int
    mode: TopKMode
    error: str = ""  # the failure's message ("" unless failed)
    create_time: datetime | None = None
    update_time: datetime | None = None
    request_id: str = ""
    preprocessing: Preprocessing | None = None  # resolved when the scan was created
    # from create only: the model runs on built-in default preprocessing
    preprocessing_warning: str = ""

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) of the model input the scan ran at: its fixed size, or under a
        per-image `resize_shorter` that of a square image (the shorter side every image
        has), which is what a receptive field is judged against."""
        prep = self.preprocessing
        if prep is None:
            return None
        return prep.reference_size()

    @property
    def name(self) -> str:
        return scan_name(self.id)

    @property
    def finished(self) -> bool:
        return self.state.finished


@dataclass(frozen=True)
class ChannelStatistics:
    channel: int
    mean_max: float
    max_max: float
    firing_rate: float
    dead: bool
    selectivity: float = 0.0
    preferred_class: str = ""
    class_mean: dict[str, float] = field(default_factory=dict)
    top_class_histogram: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerStatistics:
    images_scanned: int
    channels: tuple[ChannelStatistics, ...]
    top_channels_per_class: dict[str, tuple[int, ...]]
