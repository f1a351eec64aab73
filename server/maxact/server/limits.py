"""Bounds that keep one request from taking the whole server down, checked BEFORE allocating.

Three bounds, each set by a `maxact serve` flag and named in the error it raises:
- decoded pixels of one image, read from its header (`--max-image-pixels`);
- model-input pixels, from the requested geometry and, per image, the resized image before
  any crop (`--max-input-pixels`): every geometry resolves its sizes through
  `check_input_pixels`, so a new geometry cannot bypass it;
- bytes of client-streamed images one request holds at once (`--max-request-mb`);
- encoded bytes of one image, uploaded or read from a shard member or Parquet cell, checked
  against what its header or footer claims before reading (`--max-image-bytes`);
- classes a scan's statistics keep (`--max-classes`), and the bytes those take.

The limits are process-wide (one server per process; `build_server` installs its own).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from PIL import Image

from maxact.server.errors import Code, ServiceError, invalid_argument
from maxact.server.settings import (
    DEFAULT_MAX_CLASS_STATISTICS_MB,
    DEFAULT_MAX_CLASSES,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_INPUT_PIXELS,
    DEFAULT_MAX_REQUEST_MB,
    MIB,
    ServeSettings,
)

DEFAULT_MAX_REQUEST_BYTES = DEFAULT_MAX_REQUEST_MB * MIB
DEFAULT_MAX_CLASS_STATISTICS_BYTES = DEFAULT_MAX_CLASS_STATISTICS_MB * MIB
# class statistics: two exact-sum grids (21 int64 limbs per cell) and one transient bincount of
# the same size per batch, per (class, channel) cell of every scanned layer
CLASS_STATISTICS_BYTES_PER_CELL = 3 * 21 * 8


@dataclass(frozen=True)
class Limits:
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_classes: int = DEFAULT_MAX_CLASSES
    max_class_statistics_bytes: int = DEFAULT_MAX_CLASS_STATISTICS_BYTES

    @classmethod
    def of(cls, settings: ServeSettings) -> Limits:
        """The bounds `maxact serve` (or an in-process server) was given: each field read by
        its name from the settings (a field there, or a property converting its unit), so a
        new bound is a field here and a setting there."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


_current = Limits()


def configure(limits: Limits) -> None:
    """Install the limits of the server this process runs (Pillow's own bomb error, raised at
    open beyond twice its limit, follows the decoded-pixel bound)."""
    global _current
    _current = limits
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels


configure(_current)


def current() -> Limits:
    return _current


class ImageTooLarge(ValueError):
    """One image over a bound: the scan skips it with this reason (the others go on)."""


def check_image_pixels(width: int, height: int) -> None:
    """An image whose header announces more decoded pixels than allowed is never decoded."""
    limit = _current.max_image_pixels
    if width * height > limit:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the decoded-pixel "
            f"bound of {limit} (maxact serve --max-image-pixels; possible decompression bomb)"
        )


def image_bytes_error(size: int, what: str = "image") -> ImageTooLarge | None:
    """THE encoded-size bound of one image: called with the size a tar header or Parquet footer
    claims (or an upload's length) before those bytes are read or inflated. Returned, not
    raised, where the error is kept: a raised one's traceback would pin the bytes it refused."""
    limit = _current.max_image_bytes
    if size <= limit:
        return None
    return ImageTooLarge(
        f"{what} is {size:,} bytes, over the image-size bound of {limit:,} bytes "
        "(maxact serve --max-image-bytes)"
    )


def check_image_bytes(size: int, what: str = "image") -> None:
    error = image_bytes_error(size, what)
    if error is not None:
        raise error


def check_classes(classes: int, channels: int) -> None:
    """A scan's class statistics hold a grid of exact sums per (class, channel): refuse, before
    anything is allocated, more classes than `--max-classes` or a grid over its byte budget."""
    if classes > _current.max_classes:
        raise ServiceError(
            Code.FAILED_PRECONDITION,
            "TOO_MANY_CLASSES",
            f"the dataset has {classes:,} classes with images, over the bound of "
            f"{_current.max_classes:,} classes (maxact serve --max-classes)",
            {"bound": "max_classes", "limit": str(_current.max_classes)},
        )
    needed = classes * channels * CLASS_STATISTICS_BYTES_PER_CELL
    if needed > _current.max_class_statistics_bytes:
        limit = _current.max_class_statistics_bytes
        raise ServiceError(
            Code.FAILED_PRECONDITION,
            "TOO_MANY_CLASSES",
            f"class statistics of {classes:,} classes x {channels:,} channels need "
            f"{needed / 2**20:,.0f} MiB, over the bound of {limit / 2**20:,.0f} MiB "
            "(maxact serve --max-class-statistics-mb); scan fewer layers or fewer classes",
            {"bound": "max_class_statistics_bytes", "limit": str(limit)},
        )


def input_pixels_error(height: int, width: int, what: str) -> ServiceError:
    limit = _current.max_input_pixels
    return invalid_argument(
        "INPUT_TOO_LARGE",
        f"{what} {height}x{width} = {height * width:,} pixels is over the model-input bound of "
        f"{limit:,} pixels (maxact serve --max-input-pixels)",
        bound="max_input_pixels",
        limit=str(limit),
    )


def check_input_pixels(height: int, width: int, what: str = "model input") -> None:
    """THE model-input bound: every requested geometry (size, resize_shorter, crop, ...) and
    every per-image resize goes through here before anything of that size is allocated.
    Raises INVALID_ARGUMENT (a request) naming the bound and its flag."""
    if height * width > _current.max_input_pixels:
        raise input_pixels_error(height, width, what)


def check_image_input_pixels(height: int, width: int) -> None:
    """The per-image form: a skip reason instead of a request error."""
    if height * width > _current.max_input_pixels:
        raise ImageTooLarge(input_pixels_error(height, width, "resized image").message)


def request_bytes_error(held: int) -> ServiceError:
    limit = _current.max_request_bytes
    return ServiceError(
        Code.RESOURCE_EXHAUSTED,
        "REQUEST_MEMORY_EXCEEDED",
        f"the images this request holds at once ({held:,} bytes) exceed the per-request bound "
        f"of {limit:,} bytes (maxact serve --max-request-mb); send smaller images or lower k",
        {"bound": "max_request_bytes", "limit": str(limit)},
    )
