"""Shared helpers for scan-engine tests: datasets on disk, engines, and independent oracles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from maxact.server.data.datasets import list_image_ids, read_labels
from maxact.server.data.preprocess import Preprocessing, ResolvedPreprocessing, resolve
from maxact.server.data.reader import Batch, ImageSource, file_source
from maxact.server.models.registry import LoadedModel, ModelRegistry
from maxact.server.scan.engine import ScanEngine
from maxact.server.scan.layer import ReduceOptions
from tests.onnx_models import layer_outputs, random_cnn, save


def write_random_images(root: Path, count: int, size: int = 32, seed: int = 5) -> list[str]:
    """Smooth random PNGs at the model size (no resize: the oracle is plain numpy)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        path = root / f"class_{i % 3}" / f"img_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return list_image_ids(root)


def load(model: onnx.ModelProto, root: Path, name: str) -> LoadedModel:
    save(model, root, name)
    return ModelRegistry(root, device="cpu").get(name)


def prep_for(model: LoadedModel, size: int) -> ResolvedPreprocessing:
    return resolve(
        model.default_preprocessing,
        Preprocessing(size=(size, size)),
        model.input.fixed_size,
        model.input.layout,
    )


def sources(root: Path, ids: list[str], start: int = 0, stop: int | None = None) -> list:
    chosen: list[ImageSource] = []
    for index, image_id in enumerate(ids):
        if start <= index < (len(ids) if stop is None else stop):
            chosen.append(file_source(index, image_id, root / image_id))
    return chosen


def label_array(root: Path, ids: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    labels = read_labels(root, ids)
    classes = tuple(sorted(set(labels.values())))
    return classes, np.array([classes.index(labels[i]) if i in labels else -1 for i in ids])


def engine(
    model: LoadedModel,
    layers: list[str],
    size: int,
    options: ReduceOptions,
    classes: tuple[str, ...] = (),
    batch_size: int = 16,
) -> ScanEngine:
    prep = prep_for(model, size)
    entries = [model.layer(prep.input_size, name) for name in layers]
    return ScanEngine(model, entries, prep, options, classes, batch_size=batch_size)


def batches_of(inputs: np.ndarray, size: int) -> list[Batch]:
    """Pre-decoded `inputs` in batches of `size`, images numbered in order."""
    count = len(inputs)
    return [
        Batch(list(range(i, min(i + size, count))), [], inputs[i : i + size])
        for i in range(0, count, size)
    ]


def oracle_inputs(root: Path, ids: list[str]) -> np.ndarray:
    """The preprocessing contract written out: RGB, /255, NCHW (images are at model size)."""
    arrays = [
        np.asarray(Image.open(root / i).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
        for i in ids
    ]
    return np.stack(arrays).astype(np.float32)


def random_world(root: Path, seed: int, size: int, images: int, layers: list[str]) -> dict:
    """A `random_cnn` model, `images` random images at its size, and the oracle's outputs of
    `layers` for them (plain onnxruntime on the whole graph)."""
    proto = random_cnn(seed=seed, size=size)
    model = load(proto, root / "models", "random")
    data = root / "data"
    ids = write_random_images(data, images, size)
    outputs = layer_outputs(proto, layers, oracle_inputs(data, ids))
    return {"model": model, "data": data, "ids": ids, "outputs": outputs}


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def oracle_position_mode(
    field: object, values: np.ndarray, channel: int, k: int, bottom: bool, cap: int
) -> list[tuple[int, int, int, float]]:
    """Position mode written out per unit: greedy in each image over `field.box`, then a sort of
    all kept units by (score, image, y, x). values: [N, C, H, W]. Returns (image, y, x, score)."""
    maps = values[:, channel]
    width = maps.shape[2]
    candidates = []
    for image, channel_map in enumerate(maps):
        flat = channel_map.reshape(-1)
        order = np.argsort(flat if bottom else -flat, kind="stable")
        boxes: list[tuple] = []
        for position in order:
            y, x = divmod(int(position), width)
            box = field.box(y, x, channel)  # type: ignore[attr-defined]
            if any(_overlaps(box, other) for other in boxes):
                continue
            boxes.append(box)
            candidates.append((image, y, x, float(flat[position])))
            if len(boxes) == cap:
                break
    sign = 1 if bottom else -1
    candidates.sort(key=lambda c: (sign * c[3], c[0], c[1], c[2]))
    return candidates[:k]
