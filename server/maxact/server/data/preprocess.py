"""Image -> model input, and the exact inverse that maps a model-input box into the original image.

The value fed is `(pixel * scale - mean) / std` per channel (pixel in 0..255, channels in
`channel_order`). Geometry is either `size` (resize the whole image) or `resize_shorter` then
`center_crop`; both are affine per axis, so a box maps back exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from PIL import Image

from maxact.server.data.normalise import normalise
from maxact.server.errors import invalid_argument

CHANNEL_ORDERS = ("rgb", "bgr")
LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True)
class Preprocessing:
    """A request's preprocessing; None means "not given" so that defaults can fill it in."""

    size: tuple[int, int] | None = None
    resize_shorter: int | None = None
    center_crop: tuple[int, int] | None = None
    scale: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: str | None = None
    layout: str | None = None

    def overridden_by(self, other: Preprocessing) -> Preprocessing:
        """Self as defaults, `other`'s given fields on top."""
        given = {f.name: getattr(other, f.name) for f in fields(other)}
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str) -> Preprocessing:
        """Parse the JSON form (sidecar file / metadata), with errors naming the source."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise invalid_argument(
                "INVALID_PREPROCESSING",
                f"{source}: unknown preprocessing keys {sorted(unknown)}; known: {sorted(known)}",
            )
        try:
            return cls(
                size=_pair(data.get("size")),
                resize_shorter=None
                if data.get("resize_shorter") is None
                else int(data["resize_shorter"]),
                center_crop=_pair(data.get("center_crop")),
                scale=None if data.get("scale") is None else float(data["scale"]),
                mean=_triple(data.get("mean")),
                std=_triple(data.get("std")),
                channel_order=data.get("channel_order"),
                layout=data.get("layout"),
            ).validated(source)
        except (TypeError, ValueError) as exc:
            raise invalid_argument("INVALID_PREPROCESSING", f"{source}: {exc}") from exc

    @classmethod
    def from_json(cls, text: str, source: str) -> Preprocessing:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise invalid_argument("INVALID_PREPROCESSING", f"{source}: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise invalid_argument("INVALID_PREPROCESSING", f"{source}: expected a JSON object")
        return cls.from_mapping(data, source)

    def to_mapping(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    def validated(self, source: str = "preprocessing") -> Preprocessing:
        """Reject values that cannot describe a transform, naming the field."""

        def bad(message: str) -> Exception:
            return invalid_argument("INVALID_PREPROCESSING", f"{source}: {message}")

        for name in ("size", "center_crop"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or min(value) <= 0):
                raise bad(f"{name} must be two positive integers [height, width], got {value}")
        if self.resize_shorter is not None and self.resize_shorter <= 0:
            raise bad(f"resize_shorter must be positive, got {self.resize_shorter}")
        if self.size is not None and self.resize_shorter is not None:
            raise bad("give either size or resize_shorter, not both")
        if self.scale is not None and not math.isfinite(self.scale):
            raise bad(f"scale must be finite, got {self.scale}")
        if self.std is not None and any(s == 0 or not math.isfinite(s) for s in self.std):
            raise bad(f"std values must be finite and non-zero, got {self.std}")
        if self.mean is not None and any(not math.isfinite(m) for m in self.mean):
            raise bad(f"mean values must be finite, got {self.mean}")
        if self.channel_order is not None and self.channel_order not in CHANNEL_ORDERS:
            raise bad(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise bad(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        return self

    def output_size(self) -> tuple[int, int] | None:
        """The model-input [H, W] this produces, when it does not depend on the image."""
        if self.center_crop is not None:
            return self.center_crop
        if self.size is not None:
            return self.size
        return None


def _pair(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    items = [int(v) for v in value]
    if len(items) != 2:
        raise ValueError(f"expected two integers, got {value}")
    return items[0], items[1]


def _triple(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    items = [float(v) for v in value]
    if len(items) != 3:
        raise ValueError(f"expected three numbers, got {value}")
    return items[0], items[1], items[2]


@dataclass(frozen=True)
class Geometry:
    """Per-axis affine map original -> model input: `input = original * factor - offset`."""

    factor_y: float
    factor_x: float
    offset_y: float
    offset_x: float
    original_height: int
    original_width: int

    def to_original_unclipped(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Model-input box (half-open) -> original-image box, rounded outward, NOT clipped:
        it may extend beyond the image (negative start, stop past the size)."""
        y0, x0, y1, x1 = box
        return (
            math.floor((y0 + self.offset_y) / self.factor_y + 1e-9),
            math.floor((x0 + self.offset_x) / self.factor_x + 1e-9),
            math.ceil((y1 + self.offset_y) / self.factor_y - 1e-9),
            math.ceil((x1 + self.offset_x) / self.factor_x - 1e-9),
        )

    def to_original(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Model-input box (half-open) -> original-image box, rounded outward and clipped."""
        oy0, ox0, oy1, ox1 = self.to_original_unclipped(box)
        return (
            max(0, min(oy0, self.original_height)),
            max(0, min(ox0, self.original_width)),
            max(0, min(oy1, self.original_height)),
            max(0, min(ox1, self.original_width)),
        )


@dataclass(frozen=True)
class ResolvedPreprocessing:
    """Preprocessing with every field decided; applies to PIL images."""

    size: tuple[int, int] | None
    resize_shorter: int | None
    center_crop: tuple[int, int] | None
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str
    layout: str

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.center_crop or self.size
        assert size is not None
        return size

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of an image of this size after the resize step."""
        if self.size is not None:
            return self.size
        if self.resize_shorter is not None:
            return shorter_side_size(height, width, self.resize_shorter)
        return height, width

    def crop_origin(self, resized_height: int, resized_width: int) -> tuple[int, int]:
        """(top, left) of the centre crop inside the resized image ((0, 0) without a crop)."""
        if self.center_crop is None:
            return 0, 0
        return (
            round((resized_height - self.center_crop[0]) / 2.0),
            round((resized_width - self.center_crop[1]) / 2.0),
        )

    def geometry(self, original_height: int, original_width: int) -> Geometry:
        """The affine map from this image's pixels to model-input pixels."""
        new_h, new_w = self.resized_size(original_height, original_width)
        top, left = self.crop_origin(new_h, new_w)
        return Geometry(
            factor_y=new_h / original_height,
            factor_x=new_w / original_width,
            offset_y=top,
            offset_x=left,
            original_height=original_height,
            original_width=original_width,
        )

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """The geometric part: Pillow bilinear resize, then centre crop (padding if too small)."""
        width, height = image.size
        new_h, new_w = self.resized_size(height, width)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        if self.center_crop is not None:
            top, left = self.crop_origin(new_h, new_w)
            crop_h, crop_w = self.center_crop
            image = image.crop((left, top, left + crop_w, top + crop_h))
        return image

    def to_pixels(self, image: Image.Image) -> np.ndarray:
        """One image (any mode) -> uint8 RGB [H, W, 3] at the model-input size (geometry only)."""
        pixels = np.asarray(self.resize_and_crop(to_rgb(image)))
        if pixels.shape[:2] != self.input_size:
            raise ValueError(
                f"preprocessing produced {pixels.shape[:2]}, model expects {self.input_size}"
            )
        return pixels

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> float32 in the model's layout (lookup tables, one pass)."""
        return normalise(pixels, self.scale, self.mean, self.std, self.channel_order, self.layout)

    def to_array(self, image: Image.Image) -> np.ndarray:
        """One image (any mode) -> float32 array in the model's layout, without batch axis."""
        return self.normalise(self.to_pixels(image))


def shorter_side_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """Size after scaling so the shorter side equals `shorter` (the longer side rounded)."""
    if height <= width:
        return shorter, max(1, round(width * shorter / height))
    return max(1, round(height * shorter / width)), shorter


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette and RGBA images become RGB (alpha dropped)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() if array.size and array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / top), 0, 255).astype(np.uint8))
    return image.convert("RGB")


DEFAULT_PREPROCESSING = Preprocessing(
    scale=1.0 / 255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="rgb"
)


def resolve(
    defaults: Preprocessing,
    request: Preprocessing,
    model_size: tuple[int, int] | None,
    model_layout: str,
) -> ResolvedPreprocessing:
    """Merge model defaults and the request, and check the result fits the model input."""
    merged = DEFAULT_PREPROCESSING.overridden_by(defaults).overridden_by(request.validated())
    if request.size is not None:
        merged = replace(merged, resize_shorter=None, center_crop=request.center_crop)
    elif request.resize_shorter is not None:
        merged = replace(merged, size=None)
    if merged.size is None and merged.resize_shorter is None and merged.center_crop is None:
        if model_size is None:
            raise invalid_argument(
                "INPUT_SIZE_REQUIRED",
                "the model has a dynamic input height/width: give a size "
                "(--size H W, or --resize-shorter S --center-crop H W)",
            )
        merged = replace(merged, size=model_size)
    output = merged.output_size()
    if output is None:
        if model_size is None:
            raise invalid_argument(
                "INPUT_SIZE_REQUIRED",
                "resize_shorter alone gives a size that depends on the image: add center_crop",
            )
        merged = replace(merged, center_crop=model_size)
        output = model_size
    if model_size is not None and output != model_size:
        raise invalid_argument(
            "INVALID_PREPROCESSING",
            f"preprocessing produces {list(output)} but the model input is {list(model_size)}",
        )
    layout = merged.layout or model_layout
    return ResolvedPreprocessing(
        size=merged.size,
        resize_shorter=merged.resize_shorter,
        center_crop=merged.center_crop,
        scale=float(merged.scale if merged.scale is not None else 1.0),
        mean=merged.mean or (0.0, 0.0, 0.0),
        std=merged.std or (1.0, 1.0, 1.0),
        channel_order=merged.channel_order or "rgb",
        layout=layout,
    )
