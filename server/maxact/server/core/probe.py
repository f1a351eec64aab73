"""Try an image: one uploaded picture through one layer of a model, and the layer's strongest
channels for it, each with its activation map drawn over the receptive field of its
strongest unit. The layer runs once; nothing is stored.

Blocking: a face runs it in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from maxact.common.kinds import RenderMode
from maxact.common.preprocessing import Preprocessing
from maxact.server.core.validate import ServerState, require_field
from maxact.server.data.reader import ImageSource, load_original, open_bytes
from maxact.server.errors import failed_precondition, invalid_argument
from maxact.server.patches.crop import render_loaded
from maxact.server.patches.render import LayerActivations, PatchTarget, RenderOptions
from maxact.server.scan.neuron import input_box

MAX_CHANNELS = 64


@dataclass(frozen=True)
class ProbedChannel:
    channel: int
    score: float  # the channel's maximum over the image
    unit: tuple[int, int]  # where it is reached
    png: bytes  # the heatmap over that unit's receptive field


@dataclass(frozen=True)
class ImageProbe:
    layer: str
    channels: int  # the layer's channel count
    strongest: list[ProbedChannel]  # best first; ties: lower channel


def probe_image(
    state: ServerState, model_name: str, layer_name: str, data: bytes, top: int, patch_size: int
) -> ImageProbe:
    """The `top` strongest channels of `layer_name` for the picture `data`, with the model's
    default preprocessing."""
    if not 1 <= top <= MAX_CHANNELS:
        raise invalid_argument("INVALID_TOP", f"top must be in 1..{MAX_CHANNELS}, got {top}")
    model = state.models.get(model_name)
    prep = model.resolve(Preprocessing())
    try:
        image = load_original(ImageSource(0, "upload", lambda: open_bytes(data)))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise invalid_argument(
            "IMAGE_UNREADABLE", f"the picture cannot be decoded ({type(exc).__name__})"
        ) from None
    size = prep.input_size_for(image.height, image.width)
    layer = model.layer(size, layer_name)
    field = require_field(layer)
    if not field.spatial:
        raise failed_precondition(
            "LAYER_NOT_SPATIAL",
            f"layer {layer.name!r} is flat: it has no map to draw over the picture",
            layer=layer.name,
        )
    maps = LayerActivations(model, layer.name, field).all_channels(prep.to_array(image))
    flat = maps.reshape(maps.shape[0], -1)
    scores, best = flat.max(axis=1), flat.argmax(axis=1)
    order = np.argsort(-scores, kind="stable")[:top]
    options = RenderOptions(RenderMode.HEATMAP, patch_size=patch_size).validated()
    width = maps.shape[-1]
    strongest = []
    for channel in (int(c) for c in order):
        unit = divmod(int(best[channel]), width)
        target = PatchTarget(
            input_box(field, size, unit[0], unit[1], channel), unit, channel, field
        )
        patch = render_loaded(image, target, prep, options, lambda _array, c: maps[c])
        strongest.append(ProbedChannel(channel, float(scores[channel]), unit, patch.png))
    return ImageProbe(layer.name, int(maps.shape[0]), strongest)
