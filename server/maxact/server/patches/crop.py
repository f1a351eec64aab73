"""A hit's patch from the ORIGINAL image through the inverse preprocessing, as PNG.

`render_loaded` (through `PatchRenderer`) is the one path every RPC that returns patches
takes (StreamTopK, StreamTopKImages, GetNeuron); the render options (rf / heatmap / mask,
patch_size) are in `render`.
"""

from __future__ import annotations

import io
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.data.reader import ImageSource, load_original
from maxact.server.patches.cache import ORIGINALS, RENDERED
from maxact.server.patches.render import (
    ActivationFn,
    LayerActivations,
    PatchTarget,
    RenderOptions,
    render,
)
from maxact.server.rf import TensorField

if TYPE_CHECKING:
    from maxact.server.models.registry import LoadedModel

# Lossless either way; level 1 encodes several times faster than the default 6 for patches
# that are a few KB to a few hundred KB, which is what keeps neuron queries interactive.
PNG_COMPRESS_LEVEL = 1
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PatchImage:
    box: Box  # the exact field in original-image pixels, half-open, clipped (Hit.box)
    png: bytes
    patch_box: Box = (0, 0, 0, 0)  # what the png shows, original pixels, may leave the image
    clipped_fraction: float = 0.0  # share of patch_box outside the image (grey)


def render_loaded(
    image: Image.Image,
    target: PatchTarget,
    prep: ResolvedPreprocessing,
    options: RenderOptions | None = None,
    activations: ActivationFn | None = None,
) -> PatchImage:
    """Render `target`'s patch with `options` (default: rf) from the original image, already
    loaded upright (`load_original`)."""
    geometry = prep.geometry(image.height, image.width)
    y0, x0, y1, x1 = geometry.to_original(target.input_box)
    if y1 <= y0 or x1 <= x0:  # field lies entirely in padding added by the crop
        y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    rendered = render(image, prep, target, options or RenderOptions(), activations)
    return PatchImage(
        (y0, x0, y1, x1), encode_png(rendered.image), rendered.patch_box, rendered.clipped_fraction
    )


class PatchRenderer:
    """Renders the patches of one layer's hits with one request's options (thread-safe)."""

    def __init__(
        self,
        model: LoadedModel,
        layer: str,
        field: TensorField | None,
        prep: ResolvedPreprocessing,
        options: RenderOptions | None = None,
    ) -> None:
        self.field = field
        self.model = model
        self.layer = layer
        self.prep = prep
        self.options = options or RenderOptions()
        self.options.check_layer(field, layer)
        self._activations = (
            LayerActivations(model, layer, field)
            if self.options.needs_activations and field is not None
            else None
        )

    def __call__(
        self,
        source: ImageSource,
        input_box: Box,
        unit: tuple[int, int],
        channel: int,
        key: Hashable | None = None,
        channel_map: np.ndarray | None = None,
    ) -> PatchImage:
        """The patch of one hit; with `key` (cache.file_key of the source) the decoded image,
        the layer's output for it and channel-independent rf patches come from shared caches.
        `channel_map`: the channel's map for this image, kept by the scan (used when it has
        the layer's shape at this image's size; else the layer runs)."""
        image = self._image(key, source)
        field = self.field
        size = self.prep.input_size_for(image.height, image.width)
        if self.prep.fixed_size is None:  # per-image sizing: the field at this image's size
            field = self.model.layer(size, self.layer).field
        target = PatchTarget(input_box, unit, channel, field)
        if (
            channel_map is not None
            and self._activations is not None
            and field is not None
            and channel_map.shape == (field.height, field.width)
        ):
            kept = channel_map
            return render_loaded(image, target, self.prep, self.options, lambda _a, _c: kept)
        if key is None:
            return render_loaded(image, target, self.prep, self.options, self._activations)
        if self._activations is None:
            # rf: the patch depends on the image and the field's box only, not the channel (a
            # flat layer's 1280 channels all show the whole image): render it once
            box = target.formula_box(size)
            rendered: PatchImage = RENDERED.get(
                (key, self.prep, self.options, box, input_box),
                lambda: render_loaded(image, target, self.prep, self.options, None),
            )
            return rendered
        activations = self._activations.cached((key, self.prep))
        return render_loaded(image, target, self.prep, self.options, activations)

    @staticmethod
    def _image(key: Hashable | None, source: ImageSource) -> Image.Image:
        if key is None:
            return load_original(source)
        return ORIGINALS.get(key, lambda: load_original(source))


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
