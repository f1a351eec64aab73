"""Image -> model input, and the exact inverse that maps a model-input box into the original image.

The request fields are the client's `Preprocessing` (one definition for client, CLI, sidecar and
wire); this module resolves them against a model and owns the geometry. The value fed is
`(pixel * scale - mean) / std` per channel (pixel in 0..255, channels in `channel_order`).
Geometry is `size` (resize the whole image), `resize_shorter` then `center_crop`,
`resize_shorter` alone (aspect kept, per-image size, optionally rounded to `size_multiple`), or
`letterbox` (fit inside, pad bottom/right); all are affine per axis, so a box maps back exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from maxact.common.kinds import ChannelOrder, Layout
from maxact.common.preprocessing import (
    CHANNEL_ORDERS,
    LAYOUTS,
    Preprocessing,
    round_to_multiple,
)
from maxact.server.data.normalise import normalise
from maxact.server.errors import invalid_argument
from maxact.server.limits import check_image_input_pixels, check_input_pixels

__all__ = ["CHANNEL_ORDERS", "LAYOUTS", "Preprocessing", "parse_json", "parse_mapping"]


def parse_mapping(data: Mapping[str, Any], source: str) -> Preprocessing:
    """Parse the JSON form (sidecar file / metadata / stored scan), errors naming the source."""
    try:
        return Preprocessing.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise invalid_argument("INVALID_PREPROCESSING", f"{source}: {exc}") from None


def parse_json(text: str, source: str) -> Preprocessing:
    try:
        data = json.loads(text)  # non-finite numbers are refused by validation, naming the field
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise invalid_argument(
            "INVALID_PREPROCESSING", f"{source}: not JSON: {str(exc)[:200]}"
        ) from None
    if not isinstance(data, dict):
        raise invalid_argument("INVALID_PREPROCESSING", f"{source}: expected a JSON object")
    return parse_mapping(data, source)


def checked(prep: Preprocessing, source: str = "preprocessing") -> Preprocessing:
    """`prep.validated()` as INVALID_ARGUMENT naming the source."""
    try:
        return prep.validated()
    except ValueError as exc:
        raise invalid_argument("INVALID_PREPROCESSING", f"{source}: {exc}") from None


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
    channel_order: ChannelOrder
    layout: Layout
    size_multiple: int | None = None
    letterbox: tuple[int, int] | None = None
    pad_value: float = 0.0
    # JPEG draft decoding (`decode.uses_draft`) and crop-only resampling: faster, not exact
    fast_decode: bool = False

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """The model-input (height, width) of every image, or None when it is per image."""
        return self.letterbox or self.center_crop or self.size

    @property
    def input_size(self) -> tuple[int, int]:
        """The model-input size when it is the same for every image (else ValueError: use
        `input_size_for`)."""
        size = self.fixed_size
        if size is None:
            raise ValueError("the model-input size depends on the image (resize_shorter alone)")
        return size

    @property
    def reference_size(self) -> tuple[int, int]:
        """A size to check a request at before any image is seen: the fixed size, else that
        of a square image (resize_shorter x resize_shorter, rounded to size_multiple)."""
        if self.fixed_size is not None:
            return self.fixed_size
        assert self.resize_shorter is not None
        return self.input_size_for(self.resize_shorter, self.resize_shorter)

    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """The model-input (height, width) of an original image of this size."""
        return self.fixed_size or self.resized_size(height, width)

    def as_request(self) -> Preprocessing:
        """The resolved values in the request form (shown with results, stored nowhere)."""
        return Preprocessing(
            size=self.size,
            resize_shorter=self.resize_shorter,
            center_crop=self.center_crop,
            scale=self.scale,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
            layout=self.layout,
            size_multiple=self.size_multiple,
            letterbox=self.letterbox,
            pad_value=self.pad_value if self.letterbox is not None else None,
            fast_decode=self.fast_decode or None,
        )

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of an image of this size after the resize step; an image whose
        resize would be over the model-input bound is refused here, before any allocation."""
        if self.size is not None:
            return self.size
        if self.letterbox is not None:
            return fit_inside(height, width, self.letterbox)
        if self.resize_shorter is not None:
            resized = shorter_side_size(height, width, self.resize_shorter)
            if self.size_multiple is not None:
                resized = (
                    round_to_multiple(resized[0], self.size_multiple),
                    round_to_multiple(resized[1], self.size_multiple),
                )
            check_image_input_pixels(*resized)
            return resized
        return height, width

    def crop_origin(self, resized_height: int, resized_width: int) -> tuple[int, int]:
        """(top, left) of the centre crop inside the resized image ((0, 0) without a crop;
        a letterbox pads bottom/right, so its image starts at (0, 0) too)."""
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
        """The geometric part: Pillow bilinear resize, then centre crop (padding if too small);
        with `fast_decode`, the crop's region resampled alone (`resample_region`).
        A letterbox's padding is added by `to_array` (its value is not a Pillow colour)."""
        width, height = image.size
        new_h, new_w = self.resized_size(height, width)
        if self.center_crop is not None:
            top, left = self.crop_origin(new_h, new_w)
            crop_h, crop_w = self.center_crop
            inside = top >= 0 and left >= 0 and top + crop_h <= new_h and left + crop_w <= new_w
            if self.fast_decode and inside and (new_w, new_h) != (width, height):
                return resample_region(image, (new_w, new_h), (left, top, crop_w, crop_h))
            if (new_w, new_h) != (width, height):
                image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
            return image.crop((left, top, left + crop_w, top + crop_h))
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        return image

    @property
    def pixels_exact(self) -> bool:
        """The model input is uint8 pixels then normalised: true unless a letterbox pads with
        a value that is not a whole 0..255 pixel value (then only the float path is exact)."""
        pad = self.pad_value
        return self.letterbox is None or (float(pad).is_integer() and 0 <= pad <= 255)

    def to_pixels(self, image: Image.Image) -> np.ndarray:
        """One image (any mode) -> uint8 RGB [H, W, 3] at its model-input size (geometry
        only: what the decoded-input cache keeps and a uint8-fed graph takes)."""
        if not self.pixels_exact:
            raise ValueError(f"letterbox pad_value {self.pad_value} is not a uint8 pixel value")
        rgb = to_rgb(image)
        expected = self.input_size_for(rgb.height, rgb.width)
        pixels = np.asarray(self.resize_and_crop(rgb))
        if self.letterbox is not None:
            pixels = pad_bottom_right(pixels, self.letterbox, self.pad_value)
        if pixels.shape[:2] != expected:
            raise ValueError(f"preprocessing produced {pixels.shape[:2]}, model expects {expected}")
        return pixels

    def normalise(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> float32 in the model's layout (lookup tables, one pass);
        `out`: write there instead of a new array."""
        return normalise(
            pixels, self.scale, self.mean, self.std, self.channel_order, self.layout, out
        )

    def array_shape(self, normalised: bool = True) -> tuple[int, ...] | None:
        """The shape of every image's model input without batch axis (uint8 pixels are
        [H, W, 3]), or None when the size is per image."""
        size = self.fixed_size
        if size is None:
            return None
        if normalised and self.layout == Layout.NCHW:
            return (3, *size)
        return (*size, 3)

    def to_array(self, image: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """One image (any mode) -> float32 array in the model's layout, without batch axis;
        `out`: write there instead of a new array."""
        if self.pixels_exact:
            return self.normalise(self.to_pixels(image), out)
        if out is not None:
            return into(out, self.to_array(image))
        rgb = to_rgb(image)
        expected = self.input_size_for(rgb.height, rgb.width)
        pixels = np.asarray(self.resize_and_crop(rgb), dtype=np.float32)
        if self.letterbox is not None:
            pixels = pad_bottom_right(pixels, self.letterbox, self.pad_value)
        if pixels.shape[:2] != expected:
            raise ValueError(f"preprocessing produced {pixels.shape[:2]}, model expects {expected}")
        if self.channel_order == ChannelOrder.BGR:
            pixels = pixels[:, :, ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        values = (pixels * np.float32(self.scale) - mean) / std
        if self.layout == Layout.NCHW:
            values = values.transpose(2, 0, 1)
        return np.ascontiguousarray(values, dtype=np.float32)


def fit_inside(height: int, width: int, box: tuple[int, int]) -> tuple[int, int]:
    """Size after scaling to fit inside `box` (height, width) keeping the aspect ratio: the
    binding side fills the box exactly, the other is rounded (at least 1)."""
    box_h, box_w = box
    if height * box_w >= width * box_h:  # height binds
        return box_h, min(box_w, max(1, round(width * box_h / height)))
    return min(box_h, max(1, round(height * box_w / width))), box_w


def pad_bottom_right(pixels: np.ndarray, size: tuple[int, int], value: float) -> np.ndarray:
    """[h, w, 3] pixels placed at the top-left of a [H, W, 3] canvas of `value`."""
    height, width = pixels.shape[:2]
    if (height, width) == tuple(size):
        return pixels
    canvas = np.full((size[0], size[1], pixels.shape[2]), value, dtype=pixels.dtype)
    canvas[:height, :width] = pixels
    return canvas


def into(out: np.ndarray | None, array: np.ndarray) -> np.ndarray:
    """`array` copied into `out` (a batch slot of the same shape), or `array` itself."""
    if out is None:
        return array
    if out.shape != array.shape:
        raise ValueError(f"preprocessing produced {array.shape}, the batch holds {out.shape}")
    out[...] = array
    return out


def resample_region(
    image: Image.Image, resized: tuple[int, int], region: tuple[int, int, int, int]
) -> Image.Image:
    """The pixels `region` (left, top, width, height) of `image` resized to `resized`
    (width, height), without resizing what the crop throws away: one bilinear resample of
    the region's extent in the original (Pillow's `box`), with the resize's own scale and
    filter support. For a 640x427 photo to 256 then 224 that is 0.5 of the pixels and ~0.6 of
    the time; values equal resize-then-crop up to one step of uint8 rounding (Pillow takes
    the box in float32, so a filter weight can round differently)."""
    width, height = image.size
    scale_x, scale_y = width / resized[0], height / resized[1]
    left, top, crop_w, crop_h = region
    box = (left * scale_x, top * scale_y, (left + crop_w) * scale_x, (top + crop_h) * scale_y)
    return image.resize((crop_w, crop_h), Image.Resampling.BILINEAR, box=box)


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
    scale=1.0 / 255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order=ChannelOrder.RGB
)


def resolve(
    defaults: Preprocessing,
    request: Preprocessing,
    model_size: tuple[int, int] | None,
    model_layout: Layout,
) -> ResolvedPreprocessing:
    """Merge model defaults and the request, and check the result fits the model input."""
    merged = DEFAULT_PREPROCESSING.overridden_by(defaults).overridden_by(checked(request))
    merged = checked(merged, "preprocessing (model defaults and request merged)")
    sizing = (merged.size, merged.resize_shorter, merged.center_crop, merged.letterbox)
    if all(value is None for value in sizing):
        if model_size is None:
            raise invalid_argument(
                "INPUT_SIZE_REQUIRED",
                "the model has a dynamic input height/width: give a size (--size H W; "
                "--resize-shorter S [--center-crop H W | --size-multiple M]; --letterbox H W)",
            )
        merged = replace(merged, size=model_size)
    output = merged.output_size()
    if output is None and model_size is not None:
        if merged.size_multiple is not None:
            raise invalid_argument(
                "INVALID_PREPROCESSING",
                f"size_multiple sizes each image itself, but the model input is fixed at "
                f"{list(model_size)}: drop it (or use letterbox)",
            )
        merged = replace(merged, center_crop=model_size)
        output = model_size
    if model_size is not None and output != model_size:
        raise invalid_argument(
            "INVALID_PREPROCESSING",
            f"preprocessing produces {list(output or ())} but the model input is "
            f"{list(model_size)}",
        )
    if output is not None:
        check_input_pixels(*output, what="model input")
    if merged.letterbox is not None:
        check_input_pixels(*merged.letterbox, what="letterbox")
    if merged.resize_shorter is not None:  # the resized image is at least shorter x shorter
        check_input_pixels(merged.resize_shorter, merged.resize_shorter, what="resize_shorter")
    return ResolvedPreprocessing(
        size=merged.size,
        resize_shorter=merged.resize_shorter,
        center_crop=merged.center_crop,
        scale=float(merged.scale if merged.scale is not None else 1.0),
        mean=merged.mean or (0.0, 0.0, 0.0),
        std=merged.std or (1.0, 1.0, 1.0),
        channel_order=ChannelOrder(merged.channel_order or ChannelOrder.RGB),
        layout=Layout(merged.layout or model_layout),
        size_multiple=merged.size_multiple,
        letterbox=merged.letterbox,
        pad_value=float(merged.pad_value or 0.0),
        fast_decode=bool(merged.fast_decode),
    )
