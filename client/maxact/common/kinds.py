"""The API's small vocabularies, defined once for the client, the CLI and the server.

Each is a `str` Enum whose values are the words users see (CLI flags, JSON documents) and the
server stores, with the conversion to and from the proto enum beside it, so no module keeps
its own map between names and proto numbers. (`str, Enum` rather than `StrEnum`: Python 3.10
is supported.)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

from maxact.v1 import common_pb2, scan_service_pb2, topk_service_pb2


class _Word(str, Enum):
    """Prints, formats, reprs and compares as its value ("image", not "TopKMode.IMAGE"), so
    messages and documents read the same as when these were plain strings."""

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return repr(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


W = TypeVar("W", bound=_Word)


def _word_of(table: Mapping[W, int], value: int, what: str) -> W:
    """The word whose proto number is `value`; ValueError naming `what` for unknown numbers."""
    for word, number in table.items():
        if number == value:
            return word
    raise ValueError(f"unknown {what} {value}")


class TopKMode(_Word):
    """IMAGE: at most one entry per image; POSITION: the top units anywhere, overlapping
    receptive fields suppressed."""

    IMAGE = "image"
    POSITION = "position"

    def to_proto(self) -> topk_service_pb2.TopKMode.ValueType:
        return _MODE_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> TopKMode:
        """TOP_K_MODE_UNSPECIFIED means the default, IMAGE; unknown numbers raise ValueError."""
        if value == topk_service_pb2.TOP_K_MODE_UNSPECIFIED:
            return cls.IMAGE
        return _word_of(_MODE_TO_PROTO, value, "top-k mode")


_MODE_TO_PROTO = {
    TopKMode.IMAGE: topk_service_pb2.TOP_K_MODE_IMAGE,
    TopKMode.POSITION: topk_service_pb2.TOP_K_MODE_POSITION,
}


class TopKKind(_Word):
    """One ranking a layer reducer keeps per channel (the store's `kind` column)."""

    TOP = "top"
    BOTTOM = "bottom"
    POSITION = "position"
    POSITION_BOTTOM = "position_bottom"

    @classmethod
    def of(cls, mode: TopKMode | str, bottom: bool) -> TopKKind:
        """The ranking that answers a query in `mode` for the strongest (or weakest) units."""
        if TopKMode(mode) is TopKMode.POSITION:
            return cls.POSITION_BOTTOM if bottom else cls.POSITION
        return cls.BOTTOM if bottom else cls.TOP


class ScanState(_Word):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES

    def to_proto(self) -> scan_service_pb2.ScanState.ValueType:
        return _STATE_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> ScanState:
        return _word_of(_STATE_TO_PROTO, value, "scan state")


FINISHED_STATES = frozenset({ScanState.SUCCEEDED, ScanState.FAILED, ScanState.CANCELLED})
ACTIVE_STATES = frozenset({ScanState.QUEUED, ScanState.RUNNING})

_STATE_TO_PROTO = {
    ScanState.QUEUED: scan_service_pb2.SCAN_STATE_QUEUED,
    ScanState.RUNNING: scan_service_pb2.SCAN_STATE_RUNNING,
    ScanState.SUCCEEDED: scan_service_pb2.SCAN_STATE_SUCCEEDED,
    ScanState.FAILED: scan_service_pb2.SCAN_STATE_FAILED,
    ScanState.CANCELLED: scan_service_pb2.SCAN_STATE_CANCELLED,
}


class ResponsesMode(_Word):
    """Whether a scan keeps each image's maximum response per channel: AUTO while the matrix
    fits the server's bound, ON always (refused over the bound), OFF never."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"

    def to_proto(self) -> scan_service_pb2.ResponsesMode.ValueType:
        return _RESPONSES_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> ResponsesMode:
        """RESPONSES_MODE_UNSPECIFIED means AUTO; unknown numbers raise ValueError."""
        if value == scan_service_pb2.RESPONSES_MODE_UNSPECIFIED:
            return cls.AUTO
        return _word_of(_RESPONSES_TO_PROTO, value, "responses mode")


_RESPONSES_TO_PROTO = {
    ResponsesMode.AUTO: scan_service_pb2.RESPONSES_MODE_AUTO,
    ResponsesMode.ON: scan_service_pb2.RESPONSES_MODE_ON,
    ResponsesMode.OFF: scan_service_pb2.RESPONSES_MODE_OFF,
}


class Layout(_Word):
    """Where the channel axis of an image tensor is: [N, C, H, W] or [N, H, W, C]."""

    NCHW = "nchw"
    NHWC = "nhwc"

    def to_proto(self) -> common_pb2.Layout.ValueType:
        return _LAYOUT_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> Layout | None:
        """LAYOUT_UNSPECIFIED (and unknown numbers) mean unset: the model's default."""
        return next((layout for layout, n in _LAYOUT_TO_PROTO.items() if n == value), None)


_LAYOUT_TO_PROTO = {Layout.NCHW: common_pb2.LAYOUT_NCHW, Layout.NHWC: common_pb2.LAYOUT_NHWC}


class ChannelOrder(_Word):
    """The order of the colour channels the model expects."""

    RGB = "rgb"
    BGR = "bgr"

    def to_proto(self) -> common_pb2.ChannelOrder.ValueType:
        return _ORDER_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> ChannelOrder | None:
        """CHANNEL_ORDER_UNSPECIFIED (and unknown numbers) mean unset: the model's default."""
        return next((order for order, n in _ORDER_TO_PROTO.items() if n == value), None)


_ORDER_TO_PROTO = {
    ChannelOrder.RGB: common_pb2.CHANNEL_ORDER_RGB,
    ChannelOrder.BGR: common_pb2.CHANNEL_ORDER_BGR,
}


class RenderMode(_Word):
    """How a patch is drawn: RF the receptive field (grey outside the image), HEATMAP with the
    activation map overlaid, MASK the NetDissect-style box of the activation above a quantile."""

    RF = "rf"
    HEATMAP = "heatmap"
    MASK = "mask"

    def to_proto(self) -> common_pb2.PatchRender.ValueType:
        return _RENDER_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> RenderMode:
        """PATCH_RENDER_UNSPECIFIED means the default, RF; unknown numbers raise ValueError."""
        if value == common_pb2.PATCH_RENDER_UNSPECIFIED:
            return cls.RF
        return _word_of(_RENDER_TO_PROTO, value, "patch render")


_RENDER_TO_PROTO = {
    RenderMode.RF: common_pb2.PATCH_RENDER_RF,
    RenderMode.HEATMAP: common_pb2.PATCH_RENDER_HEATMAP,
    RenderMode.MASK: common_pb2.PATCH_RENDER_MASK,
}


# the words, in the order help texts and error messages list them
RENDER_MODES = tuple(mode.value for mode in RenderMode)
