"""The preprocessing part of a request: ONE definition, shared by client and server.

The dataclass, its JSON form (sidecar `NAME.preprocess.json`, ONNX metadata), its wire message
and its CLI flags live here, so they never drift; the server imports this class and keeps only
the geometry (resize, crop, letterbox) and its exact inverse. Every parsing or validation
problem raises ValueError naming the field (the server wraps it as INVALID_ARGUMENT).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import Enum
from fractions import Fraction
from typing import Any

from maxact.common.arguments import add_size, positive_int
from maxact.common.kinds import ChannelOrder, Layout
from maxact.v1 import common_pb2

CHANNEL_ORDERS = tuple(order.value for order in ChannelOrder)
LAYOUTS = tuple(layout.value for layout in Layout)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model input; unset (None) fields take the model's defaults.

    Sizing is one of: `size` (whole image to H x W); `resize_shorter` then `center_crop`;
    `resize_shorter` alone (aspect kept, per-image size; with `size_multiple` each side is
    rounded to the nearest multiple, at least one multiple: the PP-OCR rule); `letterbox`
    (fit inside H x W keeping the aspect ratio, pad bottom/right with `pad_value`, a pixel
    value 0..255 before scale/mean/std).
    """

    size: tuple[int, int] | None = None
    resize_shorter: int | None = None
    center_crop: tuple[int, int] | None = None
    scale: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: ChannelOrder | None = None
    layout: Layout | None = None
    size_multiple: int | None = None
    letterbox: tuple[int, int] | None = None
    pad_value: float | None = None
    # JPEG draft decoding and crop-only resampling: faster, pixel values not exact
    fast_decode: bool | None = None

    def __post_init__(self) -> None:
        # the words users write ("bgr", "nhwc") become the enums, so no caller compares text
        if self.channel_order is not None and self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be rgb or bgr, not {self.channel_order!r}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"layout must be nchw or nhwc, not {self.layout!r}")
        if self.channel_order is not None:
            object.__setattr__(self, "channel_order", ChannelOrder(self.channel_order))
        if self.layout is not None:
            object.__setattr__(self, "layout", Layout(self.layout))
        for name, length in (
            ("size", 2),
            ("center_crop", 2),
            ("letterbox", 2),
            ("mean", 3),
            ("std", 3),
        ):
            value = getattr(self, name)
            if value is not None and len(value) != length:
                raise ValueError(f"{name} needs {length} values, got {len(value)}")

    def is_empty(self) -> bool:
        """True when every field is unset, i.e. the request just uses the model's defaults."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def validated(self) -> Preprocessing:
        """Self, after rejecting values that cannot describe a transform (ValueError naming
        the field)."""
        for name in ("size", "center_crop", "letterbox"):
            value = getattr(self, name)
            if value is not None and min(value) <= 0:
                raise ValueError(
                    f"{name} must be two positive integers [height, width], got {value}"
                )
        for name in ("resize_shorter", "size_multiple"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.size is not None and self.resize_shorter is not None:
            raise ValueError("give either size or resize_shorter, not both")
        if self.letterbox is not None:
            clash = [n for n in ("size", "resize_shorter", "center_crop") if getattr(self, n)]
            if clash:
                raise ValueError(f"letterbox sizes the image itself: drop {', '.join(clash)}")
        if self.size_multiple is not None and (
            self.resize_shorter is None or self.center_crop is not None
        ):
            raise ValueError(
                "size_multiple rounds the per-image size of resize_shorter without center_crop"
            )
        for name in ("scale", "pad_value"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if self.std is not None and any(s == 0 or not math.isfinite(s) for s in self.std):
            raise ValueError(f"std values must be finite and non-zero, got {list(self.std)}")
        if self.mean is not None and any(not math.isfinite(m) for m in self.mean):
            raise ValueError(f"mean values must be finite, got {list(self.mean)}")
        return self

    def overridden_by(self, other: Preprocessing) -> Preprocessing:
        """Self as defaults, `other`'s given fields on top; a request that sizes the image
        one way drops the defaults' other way of sizing (a request `size` drops a sidecar's
        `letterbox`)."""
        merged = replace(
            self, **{f.name: v for f in fields(other) if (v := getattr(other, f.name)) is not None}
        )
        if other.size is not None:
            merged = replace(
                merged,
                resize_shorter=None,
                center_crop=other.center_crop,
                letterbox=None,
                size_multiple=None,
            )
        elif other.resize_shorter is not None:
            merged = replace(merged, size=None, letterbox=None)
            if other.size_multiple is not None and other.center_crop is None:
                merged = replace(merged, center_crop=None)
        elif other.letterbox is not None:
            merged = replace(
                merged, size=None, resize_shorter=None, center_crop=None, size_multiple=None
            )
        return merged

    def output_size(self) -> tuple[int, int] | None:
        """The model-input [H, W] this produces, when it does not depend on the image."""
        return self.letterbox or self.center_crop or self.size

    def reference_size(self) -> tuple[int, int] | None:
        """The model-input [H, W] to judge a layer's field against: the fixed size, else that
        of a square image under a per-image `resize_shorter` (rounded to `size_multiple`),
        the size the server checks such a request at."""
        fixed = self.output_size()
        if fixed is not None or self.resize_shorter is None:
            return fixed
        side = self.resize_shorter
        if self.size_multiple is not None:
            side = round_to_multiple(side, self.size_multiple)
        return side, side

    def to_proto(self) -> common_pb2.Preprocessing:
        """The wire message; unset fields stay unset so the server applies the model defaults."""
        msg = common_pb2.Preprocessing()
        for name in ("size", "center_crop", "mean", "std", "letterbox"):
            value = getattr(self, name)
            if value is not None:
                getattr(msg, name).extend(value)
        for name in ("resize_shorter", "size_multiple", "scale", "pad_value", "fast_decode"):
            value = getattr(self, name)
            if value is not None:
                setattr(msg, name, value)
        if self.channel_order is not None:
            msg.channel_order = self.channel_order.to_proto()
        if self.layout is not None:
            msg.layout = self.layout.to_proto()
        return msg

    @classmethod
    def from_proto(cls, msg: common_pb2.Preprocessing) -> Preprocessing:
        """Read a wire message back; proto3 zero values mean unset. Wrong value counts raise
        ValueError naming the field."""
        return cls(
            size=_pair(msg.size, "size"),
            resize_shorter=msg.resize_shorter or None,
            center_crop=_pair(msg.center_crop, "center_crop"),
            scale=msg.scale if msg.HasField("scale") else None,
            mean=_triple(msg.mean, "mean"),
            std=_triple(msg.std, "std"),
            channel_order=ChannelOrder.from_proto(msg.channel_order),
            layout=Layout.from_proto(msg.layout),
            size_multiple=msg.size_multiple or None,
            letterbox=_pair(msg.letterbox, "letterbox"),
            pad_value=msg.pad_value if msg.HasField("pad_value") else None,
            fast_decode=msg.fast_decode if msg.HasField("fast_decode") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The sidecar / JSON form (docs/contracts.md): only the fields that are set, lists for
        tuples."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Parse the sidecar JSON form. Unknown keys are an error so typos do not go unnoticed;
        `mean`/`std` may be one number for all three channels; every other problem raises
        ValueError naming the field and what it got."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(
                f"unknown preprocessing keys: {', '.join(unknown)} (known: {', '.join(known)})"
            )
        parsers = {
            "size": _json_pair,
            "center_crop": _json_pair,
            "letterbox": _json_pair,
            "resize_shorter": _json_int,
            "size_multiple": _json_int,
            "scale": _json_number,
            "pad_value": _json_number,
            "mean": _json_triple,
            "std": _json_triple,
            "channel_order": _json_choice,
            "layout": _json_choice,
            "fast_decode": _json_bool,
        }
        values: dict[str, Any] = {}
        for name, value in data.items():
            if value is None:
                continue
            try:
                values[name] = parsers[name](value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"field {name!r}: {exc}") from None
        return cls(**values).validated()


def round_to_multiple(side: int, multiple: int) -> int:
    """The nearest multiple of `multiple`, at least one multiple (the PP-OCR rule)."""
    return max(multiple, round(side / multiple) * multiple)


def _pair(values: Any, name: str) -> tuple[int, int] | None:
    if not values:
        return None
    if len(values) != 2:
        raise ValueError(f"{name} needs two values [height, width], got {list(values)}")
    return int(values[0]), int(values[1])


def _triple(values: Any, name: str) -> tuple[float, float, float] | None:
    if not values:
        return None
    if len(values) == 1:  # one number for every channel, as a sidecar may say
        return float(values[0]), float(values[0]), float(values[0])
    if len(values) != 3:
        raise ValueError(f"{name} needs three values (or one for all channels), got {list(values)}")
    return float(values[0]), float(values[1]), float(values[2])


def _json_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _json_int(value: Any) -> int:
    number = _json_number(value)
    if number != int(number):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(number)


def _json_pair(value: Any) -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"expected two integers [height, width], got {value!r}")
    return _json_int(value[0]), _json_int(value[1])


def _json_triple(value: Any) -> tuple[float, float, float]:
    """Three numbers, or one number meaning the same value for every channel."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = _json_number(value)
        return number, number, number
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(f"expected three numbers (or one for all channels), got {value!r}")
    first, second, third = (_json_number(v) for v in value)
    return first, second, third


def _json_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """An enum as its word, so JSON and repr show "nchw" whatever the serialiser."""
    return value.value if isinstance(value, Enum) else value


def _json_choice(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value.lower()


def parse_number(text: str) -> float:
    """A float that may also be written as a fraction, so `--scale 1/255` works as typed."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


class _OneOrThree(argparse.Action):
    """`--mean 0.5` or `--mean 0.485 0.456 0.406`: one number stands for all three channels,
    as in a sidecar; any other count is a usage error naming the flag."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        numbers = list(values)
        if len(numbers) not in (1, 3):
            parser.error(
                f"{option_string} takes one number (all channels) or three, got {len(numbers)}"
            )
        setattr(namespace, self.dest, numbers * 3 if len(numbers) == 1 else numbers)


def add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """The preprocessing flags, shared by every command that runs the model."""
    group = parser.add_argument_group("preprocessing (unset: the model's defaults)")
    add_size(group, "resize to H x W")
    group.add_argument(
        "--resize-shorter", type=positive_int, metavar="S", help="resize the shorter side to S"
    )
    add_size(
        group,
        "then crop H x W from the centre (without it: aspect kept, per-image size)",
        "--center-crop",
    )
    group.add_argument(
        "--size-multiple",
        type=positive_int,
        metavar="M",
        help="with --resize-shorter alone: round each side to the nearest multiple of M "
        "(at least M), as detectors and OCR models (e.g. PP-OCR, M=32) expect",
    )
    add_size(group, "fit inside H x W keeping the aspect ratio, pad bottom/right", "--letterbox")
    group.add_argument(
        "--pad-value",
        type=parse_number,
        metavar="V",
        help="letterbox padding, a pixel value 0..255 before scale/mean/std (default 0)",
    )
    group.add_argument(
        "--scale", type=parse_number, metavar="X", help="multiply pixels (0..255) by X, e.g. 1/255"
    )
    group.add_argument(
        "--mean",
        nargs="+",
        type=parse_number,
        action=_OneOrThree,
        metavar="A",
        help="subtract, per channel: three numbers, or one for all channels",
    )
    group.add_argument(
        "--std",
        nargs="+",
        type=parse_number,
        action=_OneOrThree,
        metavar="A",
        help="divide, per channel: three numbers, or one for all channels",
    )
    group.add_argument("--channel-order", choices=sorted(CHANNEL_ORDERS), help="rgb or bgr")
    group.add_argument("--layout", choices=sorted(LAYOUTS), help="nchw or nhwc")
    group.add_argument(
        "--fast-decode",
        action="store_true",
        default=None,
        help="decode faster, not exactly: JPEG draft decoding for photos at least twice the "
        "target size, and only the centre crop resampled (boxes stay exact; pixel values "
        "differ slightly from an exact decode)",
    )


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
        size_multiple=args.size_multiple,
        letterbox=tuple(args.letterbox) if args.letterbox else None,
        pad_value=args.pad_value,
        fast_decode=args.fast_decode,
    )
    return None if prep.is_empty() else prep
