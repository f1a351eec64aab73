"""Bounds that keep one request from taking the whole server down, checked BEFORE allocating.

Three bounds, each set by a `maxact serve` flag and named in the error it raises:
- decoded pixels of one image, read from its header (`--max-image-pixels`);
- model-input pixels, from the requested geometry and, per image, the resized image before
  any crop (`--max-input-pixels`): every geometry resolves its sizes through
  `check_input_pixels`, so a new geometry cannot bypass it;
- bytes of client-streamed images one request holds at once (`--max-request-mb`).

The limits are process-wide (one server per process; `build_server` installs its own).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from maxact.server.errors import Code, ServiceError, invalid_argument

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
DEFAULT_MAX_INPUT_PIXELS = 2048 * 2048
DEFAULT_MAX_REQUEST_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES


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
