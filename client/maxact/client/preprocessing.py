"""The preprocessing part of a request, as a dataclass, its proto, its JSON and its CLI flags.

One place owns the mapping so the CLI flags, the sidecar JSON and the wire message never drift.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

from maxact.client.arguments import add_size, positive_int
from maxact.v1 import common_pb2

_CHANNEL_ORDERS = {"rgb": common_pb2.CHANNEL_ORDER_RGB, "bgr": common_pb2.CHANNEL_ORDER_BGR}
_LAYOUTS = {"nchw": common_pb2.LAYOUT_NCHW, "nhwc": common_pb2.LAYOUT_NHWC}


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model input; unset (None) fields take the model's defaults."""

    size: tuple[int, int] | None = None
    resize_shorter: int | None = None
    center_crop: tuple[int, int] | None = None
    scale: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: str | None = None  # "rgb" | "bgr"
    layout: str | None = None  # "nchw" | "nhwc"

    def __post_init__(self) -> None:
        if self.channel_order is not None and self.channel_order not in _CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be rgb or bgr, not {self.channel_order!r}")
        if self.layout is not None and self.layout not in _LAYOUTS:
            raise ValueError(f"layout must be nchw or nhwc, not {self.layout!r}")
        for name, length in (("size", 2), ("center_crop", 2), ("mean", 3), ("std", 3)):
            value = getattr(self, name)
            if value is not None and len(value) != length:
                raise ValueError(f"{name} needs {length} values, got {len(value)}")

    def is_empty(self) -> bool:
        """True when every field is unset, i.e. the request just uses the model's defaults."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def to_proto(self) -> common_pb2.Preprocessing:
        """The wire message; unset fields stay unset so the server applies the model defaults."""
        msg = common_pb2.Preprocessing()
        if self.size is not None:
            msg.size.extend(self.size)
        if self.resize_shorter is not None:
            msg.resize_shorter = self.resize_shorter
        if self.center_crop is not None:
            msg.center_crop.extend(self.center_crop)
        if self.scale is not None:
            msg.scale = self.scale
        if self.mean is not None:
            msg.mean.extend(self.mean)
        if self.std is not None:
            msg.std.extend(self.std)
        if self.channel_order is not None:
            msg.channel_order = _CHANNEL_ORDERS[self.channel_order]
        if self.layout is not None:
            msg.layout = _LAYOUTS[self.layout]
        return msg

    @classmethod
    def from_proto(cls, msg: common_pb2.Preprocessing) -> Preprocessing:
        """Read a wire message back; proto3 zero values mean unset."""
        orders = {v: k for k, v in _CHANNEL_ORDERS.items()}
        layouts = {v: k for k, v in _LAYOUTS.items()}
        return cls(
            size=_pair(msg.size),
            resize_shorter=msg.resize_shorter or None,
            center_crop=_pair(msg.center_crop),
            scale=msg.scale if msg.HasField("scale") else None,
            mean=_triple(msg.mean),
            std=_triple(msg.std),
            channel_order=orders.get(msg.channel_order),
            layout=layouts.get(msg.layout),
        )

    def to_dict(self) -> dict[str, Any]:
        """The sidecar / JSON form (docs/contracts.md): only the fields that are set, lists for
        tuples."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Parse the sidecar JSON form; unknown keys are an error so typos do not go unnoticed."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {', '.join(unknown)}")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


def _pair(values: Any) -> tuple[int, int] | None:
    return (int(values[0]), int(values[1])) if len(values) == 2 else None


def _triple(values: Any) -> tuple[float, float, float] | None:
    return (float(values[0]), float(values[1]), float(values[2])) if len(values) == 3 else None


def parse_number(text: str) -> float:
    """A float that may also be written as a fraction, so `--scale 1/255` works as typed."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """The preprocessing flags (docs/contracts.md), shared by every command that runs the model."""
    group = parser.add_argument_group("preprocessing (unset: the model's defaults)")
    add_size(group, "resize to H x W")
    group.add_argument(
        "--resize-shorter", type=positive_int, metavar="S", help="resize the shorter side to S"
    )
    group.add_argument(
        "--center-crop",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="then crop H x W from the centre",
    )
    group.add_argument(
        "--scale", type=parse_number, metavar="X", help="multiply pixels (0..255) by X, e.g. 1/255"
    )
    group.add_argument(
        "--mean", nargs=3, type=parse_number, metavar=("A", "B", "C"), help="subtract, per channel"
    )
    group.add_argument(
        "--std", nargs=3, type=parse_number, metavar=("A", "B", "C"), help="divide, per channel"
    )
    group.add_argument("--channel-order", choices=sorted(_CHANNEL_ORDERS), help="rgb or bgr")
    group.add_argument("--layout", choices=sorted(_LAYOUTS), help="nchw or nhwc")


def preprocessing_from_args(args: argparse.Namespace) -> Preprocessing | None:
    """The Preprocessing the flags describe, or None when no flag was given."""
    prep = Preprocessing(
        size=tuple(args.size) if args.size else None,
        resize_shorter=args.resize_shorter,
        center_crop=tuple(args.center_crop) if args.center_crop else None,
        scale=args.scale,
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
        channel_order=args.channel_order,
        layout=args.layout,
    )
    return None if prep.is_empty() else prep
