"""Per-layer choices of how patches are rendered and in which file format (the report, `class`
and the HTTP API choose alike).

Why `mask` for deep layers: a unit's theoretical receptive field grows with depth and soon
exceeds the model's input crop (MobileNetV3's last layers see ~1000 px of a 224 px crop), so an
`rf` patch is mostly the grey of "outside the crop" with the photo shrunk in its middle. The
unit's effective field is far smaller (Luo et al. 2016): `mask` crops the region of the image
where the channel's activation map is highest around the winning unit, which is what a reader
wants to see. `rf` stays the default while the field fits comfortably in the crop: there it is
exact and needs no model run.
"""

from __future__ import annotations

from maxact.common import results as t
from maxact.common.kinds import RenderMode

# rf while the field is at most this share of the input's shorter side; mask beyond
MAX_RF_SHARE = 0.5
# patches whose field is this much smaller than the patch were upscaled pixel by pixel:
# PNG keeps those exact (and compresses them well); photos-like patches go JPEG
PIXEL_ART_FACTOR = 2


def field_size(layer: t.LayerInfo | None) -> float | None:
    """The largest side of the layer's field in input pixels (None: unknown or not spatial)."""
    if layer is None or layer.receptive_field is None or not layer.receptive_field.spatial:
        return None
    return float(max(layer.receptive_field.geometry.size))


def default_render(layer: t.LayerInfo | None, input_size: tuple[int, int] | None) -> str:
    """`mask` when the field is larger than half the input's shorter side, else `rf`."""
    size = field_size(layer)
    if size is None or input_size is None or min(input_size) <= 0:
        return RenderMode.RF
    return RenderMode.MASK if size > MAX_RF_SHARE * min(input_size) else RenderMode.RF


def layer_render(
    layer: t.LayerInfo | None, input_size: tuple[int, int] | None, chosen: str | None = None
) -> str:
    """The render of a layer's patches everywhere (layer page, classes page, `class --out`):
    the user's choice, else default_render; heatmap and mask need a spatial map, so a flat
    layer (logits) is always `rf` (its patch is the whole image)."""
    mode = chosen or default_render(layer, input_size)
    if mode != "rf" and (layer is None or not layer.has_spatial_field):
        return "rf"
    return mode


def patch_format(layer: t.LayerInfo | None, render: str, patch_size: int) -> str:
    """ "png" where exactness matters (patches at their own size, or tiny fields shown as
    enlarged pixels), else "jpeg" (photos: ~10x smaller)."""
    if patch_size <= 0:
        return "png"
    size = field_size(layer)
    if render == RenderMode.RF and size is not None and size * PIXEL_ART_FACTOR <= patch_size:
        return "png"
    return "jpeg"
