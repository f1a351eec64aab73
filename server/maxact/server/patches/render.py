"""Render a hit's patch from the ORIGINAL image: `rf`, `heatmap` or `mask`.

- `rf` (the default): the unit's formula receptive field `[i*S - P, i*S - P + R)` per axis,
  UNCLIPPED, mapped back through the inverse preprocessing. Pixels of that box outside the
  original image are neutral grey (128); `clipped_fraction` is the share of the box's area
  they take. A box inside the image gives exactly the crop of the image (no resampling).
- `heatmap`: the `rf` patch with the channel's activation map for that image overlaid (jet-like
  colormap, alpha 0.5; normalised by the image's map minimum and maximum: blue low, red high)
  and a white ring (black edge) around the winning unit's field centre. Grey border pixels
  stay grey.
- `mask` (NetDissect style, Bau et al. 2017): the channel's activation map is upsampled to the
  model input with the RF-centre-preserving mapping (unit i's value sits at input pixel
  `i*S - P + (R-1)/2`, bilinear between centres, constant beyond the outer centres), then
  thresholded at the `mask_quantile` quantile of THIS image's upsampled map (NetDissect takes
  a dataset-wide quantile per unit; a per-image quantile needs no extra pass over the data:
  with the default 0.95 the mask is at most the hottest 5% of the image). The patch is the
  bounding box of the mask's 8-connected region holding the hit's unit centre (else the
  region nearest to it), mapped back into the original image. Useful in deep layers, whose
  theoretical field is often larger than the image. The mask marks where the unit fires
  MOST, also for bottom-k hits.

`patch_size` > 0 then fits every patch into a patch_size x patch_size square, aspect kept,
grey letterbox (montages): upscaling with nearest neighbour (pixels stay visible), downscaling
with Lanczos.

The activation map needs the layer's output for that one image: the pruned, cached session
runs on the single preprocessed image (k runs per request).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from maxact.common.defaults import DEFAULT_MASK_QUANTILE
from maxact.common.kinds import RENDER_MODES, Layout, RenderMode
from maxact.server.data.preprocess import Geometry, ResolvedPreprocessing, to_rgb
from maxact.server.errors import failed_precondition, invalid_argument
from maxact.server.patches.cache import layer_output
from maxact.server.patches.mask_cells import EIGHT_CONNECTED, cell_mask
from maxact.server.patches.upsample import upsample
from maxact.server.rf import AxisGeometry, TensorField
from maxact.server.scan.layer import channels_first

if TYPE_CHECKING:
    from maxact.server.models.registry import LoadedModel

MAX_PATCH_SIZE = 2048
# An unclipped field can be far larger than the image (deep layers, big photos resized down):
# grey-bordered and heatmap patches are scaled down to at most this many pixels (a plain crop
# inside the image is never resampled).
MAX_PATCH_PIXELS = 2048 * 2048
GREY = 128
HEATMAP_ALPHA = 0.5
MARKER_RADIUS = 0.1  # of the heatmap patch's shorter side
Box = tuple[int, int, int, int]
# (position, RGB) stops of a jet-like colormap
_COLORMAP = np.array(
    [
        (0.0, 0, 0, 143),
        (0.125, 0, 0, 255),
        (0.375, 0, 255, 255),
        (0.625, 255, 255, 0),
        (0.875, 255, 0, 0),
        (1.0, 128, 0, 0),
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class RenderOptions:
    mode: RenderMode = RenderMode.RF
    mask_quantile: float = DEFAULT_MASK_QUANTILE
    patch_size: int = 0

    def validated(self) -> RenderOptions:
        if self.mode not in RENDER_MODES:
            raise invalid_argument(
                "INVALID_RENDER", f"render must be one of {RENDER_MODES}, got {self.mode!r}"
            )
        if not (0.0 < self.mask_quantile < 1.0) or math.isnan(self.mask_quantile):
            raise invalid_argument(
                "INVALID_MASK_QUANTILE",
                f"mask_quantile must be strictly between 0 and 1, got {self.mask_quantile}",
            )
        if not 0 <= self.patch_size <= MAX_PATCH_SIZE:
            raise invalid_argument(
                "INVALID_PATCH_SIZE",
                f"patch_size must be in 0..{MAX_PATCH_SIZE} (0: the patch's own size), "
                f"got {self.patch_size}",
            )
        return replace(self, mode=RenderMode(self.mode))

    @property
    def needs_activations(self) -> bool:
        return self.mode is not RenderMode.RF

    def check_layer(self, field: TensorField | None, layer: str) -> None:
        """heatmap and mask need a spatial activation map."""
        if self.needs_activations and (field is None or not field.spatial):
            raise failed_precondition(
                "RENDER_NEEDS_SPATIAL_LAYER",
                f"render {self.mode!r} needs a spatial layer; {layer!r} is flat (its patch is "
                "the whole image): use render 'rf'",
                layer=layer,
            )


@dataclass(frozen=True)
class PatchTarget:
    """The hit a patch is rendered for."""

    input_box: Box  # the exact field in model-input pixels (Hit.box)
    unit: tuple[int, int] = (0, 0)
    channel: int = 0
    field: TensorField | None = None  # None: only `input_box` is known (no border, no maps)

    @property
    def spatial(self) -> bool:
        return self.field is not None and self.field.spatial

    def formula_box(self, input_size: tuple[int, int]) -> Box:
        """The unclipped formula field (model-input pixels), holding the exact one."""
        if self.field is None:
            return self.input_box
        if not self.field.spatial:
            height, width = input_size
            return (0, 0, height, width)
        y0, x0, y1, x1 = self.field.box_outward(*self.unit, self.channel)
        e = self.input_box
        if e[0] < e[2] and e[1] < e[3]:
            y0, x0, y1, x1 = min(y0, e[0]), min(x0, e[1]), max(y1, e[2]), max(x1, e[3])
        return (y0, x0, y1, x1)

    def axes(self) -> tuple[AxisGeometry, AxisGeometry]:
        assert self.field is not None
        group = self.field.group_of(self.channel)
        return group.height, group.width


@dataclass(frozen=True)
class Rendered:
    image: Image.Image
    patch_box: Box  # original pixels, half-open, may leave the image
    clipped_fraction: float


# Takes how to get one preprocessed image (no batch axis; called only when the layer must
# run, a cached map needs no resize) and a channel, returns its [H', W'] map.
ActivationFn = Callable[[Callable[[], np.ndarray], int], np.ndarray]


def render(
    image: Image.Image,
    prep: ResolvedPreprocessing,
    target: PatchTarget,
    options: RenderOptions,
    activations: ActivationFn | None = None,
) -> Rendered:
    """Render the patch of `target` from the original (upright, loaded) `image`."""
    geometry = prep.geometry(image.height, image.width)
    picture = to_rgb(image) if image.mode not in ("RGB", "L") else image
    if options.needs_activations:
        if activations is None or not target.spatial:
            raise ValueError(f"render {options.mode!r} needs a spatial layer and activations")
        channel_map = np.asarray(
            activations(lambda: prep.to_array(image), target.channel), dtype=np.float64
        )
        if options.mode is RenderMode.MASK:
            rendered = _mask(picture, prep, geometry, target, options, channel_map)
        else:
            rendered = _heatmap(picture, prep, geometry, target, channel_map)
    else:
        size = prep.input_size_for(image.height, image.width)
        box = geometry.to_original_unclipped(target.formula_box(size))
        patch, clipped = crop_with_border(picture, box)
        rendered = Rendered(patch, box, clipped)
    if options.patch_size > 0:
        rendered = Rendered(
            letterbox(rendered.image, options.patch_size),
            rendered.patch_box,
            rendered.clipped_fraction,
        )
    return rendered


def crop_with_border(image: Image.Image, box: Box) -> tuple[Image.Image, float]:
    """Crop `box` (original pixels, may leave the image); outside pixels neutral grey.

    Returns the patch and the fraction of the box outside the image. A box inside the image
    is a plain crop; a box over MAX_PATCH_PIXELS is rendered scaled down.
    """
    y0, x0, y1, x1 = box
    y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    height, width = y1 - y0, x1 - x0
    iy0, ix0 = max(y0, 0), max(x0, 0)
    iy1, ix1 = min(y1, image.height), min(x1, image.width)
    inside = max(0, iy1 - iy0) * max(0, ix1 - ix0)
    if inside == height * width:
        return image.crop((x0, y0, x1, y1)), 0.0
    clipped = 1.0 - inside / (height * width)
    scale = min(1.0, math.sqrt(MAX_PATCH_PIXELS / (height * width)))
    out_h, out_w = max(1, round(height * scale)), max(1, round(width * scale))
    fill: int | tuple[int, int, int] = GREY if image.mode == "L" else (GREY, GREY, GREY)
    canvas = Image.new(image.mode, (out_w, out_h), fill)
    if inside:
        part = image.crop((ix0, iy0, ix1, iy1))
        dy0, dx0 = round((iy0 - y0) * scale), round((ix0 - x0) * scale)
        if scale < 1.0:
            dy1, dx1 = round((iy1 - y0) * scale), round((ix1 - x0) * scale)
            part = part.resize((max(1, dx1 - dx0), max(1, dy1 - dy0)), Image.Resampling.BILINEAR)
        canvas.paste(part, (dx0, dy0))
    return canvas, clipped


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Fit into size x size, aspect kept, centred on neutral grey."""
    scale = size / max(image.width, image.height)
    new_w = min(size, max(1, round(image.width * scale)))
    new_h = min(size, max(1, round(image.height * scale)))
    if (new_w, new_h) != image.size:
        if scale > 1:
            image = image.resize((new_w, new_h), Image.Resampling.NEAREST)
        else:  # reducing_gap: a box pre-shrink, then Lanczos; ~10x faster for big photos
            image = image.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    fill: int | tuple[int, int, int] = GREY if image.mode == "L" else (GREY, GREY, GREY)
    canvas = Image.new(image.mode, (size, size), fill)
    canvas.paste(image, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def _unit_centre(target: PatchTarget, size: tuple[int, int]) -> tuple[int, int]:
    gh, gw = target.axes()
    y, x = target.unit
    cy = math.floor(float(y * gh.stride - gh.padding + (gh.size - 1) / 2) + 0.5)
    cx = math.floor(float(x * gw.stride - gw.padding + (gw.size - 1) / 2) + 0.5)
    return min(max(cy, 0), size[0] - 1), min(max(cx, 0), size[1] - 1)


def component_box(mask: np.ndarray, seed: tuple[int, int], half: int = 64) -> Box:
    """The bounding box of the 8-connected region of `mask` holding `seed` (in the mask).

    Labelled in a window around the seed, doubled until the region stays clear of every
    window edge that is not the image's: then nothing outside can join it, so the box is
    exact, and a local mask costs a small window instead of the whole input."""
    height, width = mask.shape
    while True:
        y0, y1 = max(0, seed[0] - half), min(height, seed[0] + half + 1)
        x0, x1 = max(0, seed[1] - half), min(width, seed[1] + half + 1)
        labels, _ = ndimage.label(mask[y0:y1, x0:x1], structure=EIGHT_CONNECTED)
        ys, xs = np.nonzero(labels == labels[seed[0] - y0, seed[1] - x0])
        top, left, bottom, right = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
        closed = (
            (top > 0 or y0 == 0)
            and (left > 0 or x0 == 0)
            and (bottom < y1 - y0 or y1 == height)
            and (right < x1 - x0 or x1 == width)
        )
        if closed:
            return (int(y0 + top), int(x0 + left), int(y0 + bottom), int(x0 + right))
        half *= 2


SAMPLE_MARGIN = 0.05  # the sample's quantile this much lower than the mask's: a safe bound


def above_quantile(values: np.ndarray, quantile: float) -> np.ndarray:
    """values > np.quantile(values, quantile) (its linear method), or >= when nothing is
    above (the top values tie).

    No value lies strictly between the order statistic at floor(quantile * (N - 1)) and the
    next one, so the interpolated threshold selects exactly the values above that order
    statistic. It is found among the values above a bound from a 1/64 sample: when enough
    values are above the bound (checked, else all values are sorted), only those few are
    sorted. np.quantile on a 736 x 1000 upsampled ReLU map (long runs of equal values) took
    ~10x longer."""
    flat = values.ravel()
    low = math.floor(quantile * (flat.size - 1))
    needed = flat.size - low  # values at ascending positions low .. N-1
    sample = values[::8, ::8].ravel()
    bound = np.sort(sample)[math.floor(max(0.0, quantile - SAMPLE_MARGIN) * (sample.size - 1))]
    above = flat[flat > bound]
    # enough above the bound: the order statistic is among them; else sort everything
    enough = above.size >= needed
    lower = np.sort(above)[above.size - needed] if enough else np.sort(flat)[low]
    mask: np.ndarray = values > lower
    return mask if mask.any() else values >= lower


def mask_box(
    channel_map: np.ndarray,
    target: PatchTarget,
    size: tuple[int, int],
    quantile: float,
) -> Box:
    """The mask's bounding box in model-input pixels (see the module docstring); float32
    maps (what the layer gave) halve the memory the quantile reads.

    Only the blocks that can hold mask pixels are upsampled (`mask_cells`: the same mask,
    ~4x cheaper on a detector's map); when that prunes too little, the whole map is."""
    cells = cell_mask(channel_map, target.axes(), size, quantile)
    seed = _unit_centre(target, size)
    if cells is not None:
        if not cells.holds(seed):
            seed = cells.nearest(seed)
        y0, x0, y1, x1 = cells.window(seed)  # holds the seed's whole region
        local = (seed[0] - y0, seed[1] - x0)
        top, left, bottom, right = component_box(cells.mask_in((y0, x0, y1, x1)), local)
        return (y0 + top, x0 + left, y0 + bottom, x0 + right)
    return whole_map_mask_box(channel_map, target, size, quantile)


def whole_map_mask_box(
    channel_map: np.ndarray, target: PatchTarget, size: tuple[int, int], quantile: float
) -> Box:
    """`mask_box` with the whole map upsampled to the input: when pruning cannot pay."""
    seed = _unit_centre(target, size)
    up = upsample(
        channel_map,
        target.axes(),
        np.arange(size[0], dtype=np.float64),
        np.arange(size[1], dtype=np.float64),
        np.float32,
    )
    mask = above_quantile(up, quantile)
    if not mask[seed]:
        ys, xs = np.nonzero(mask)
        nearest = int(np.argmin((ys - seed[0]) ** 2 + (xs - seed[1]) ** 2))
        seed = (int(ys[nearest]), int(xs[nearest]))
    return component_box(mask, seed)


def _mask(
    picture: Image.Image,
    prep: ResolvedPreprocessing,
    geometry: Geometry,
    target: PatchTarget,
    options: RenderOptions,
    channel_map: np.ndarray,
) -> Rendered:
    size = prep.input_size_for(geometry.original_height, geometry.original_width)
    box = mask_box(channel_map, target, size, options.mask_quantile)
    y0, x0, y1, x1 = geometry.to_original(box)
    y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    patch, clipped = crop_with_border(picture, (y0, x0, y1, x1))
    return Rendered(patch, (y0, x0, y1, x1), clipped)


def colorize(values: np.ndarray) -> np.ndarray:
    """[..] values in 0..1 -> [.., 3] float RGB 0..255 (jet-like)."""
    flat = np.clip(values, 0.0, 1.0).ravel()
    channels = [np.interp(flat, _COLORMAP[:, 0], _COLORMAP[:, c]) for c in (1, 2, 3)]
    return np.stack(channels, axis=-1).reshape(*values.shape, 3).astype(np.float32)


def _heatmap(
    picture: Image.Image,
    prep: ResolvedPreprocessing,
    geometry: Geometry,
    target: PatchTarget,
    channel_map: np.ndarray,
) -> Rendered:
    size = prep.input_size_for(geometry.original_height, geometry.original_width)
    box = geometry.to_original_unclipped(target.formula_box(size))
    patch, clipped = crop_with_border(picture, box)
    if patch.width * patch.height > MAX_PATCH_PIXELS:
        scale = math.sqrt(MAX_PATCH_PIXELS / (patch.width * patch.height))
        patch = patch.resize(
            (max(1, int(patch.width * scale)), max(1, int(patch.height * scale))),
            Image.Resampling.BILINEAR,
        )
    y0, x0, y1, x1 = box
    y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    out_w, out_h = patch.size
    # patch pixel centres -> original coordinates -> model-input pixel coordinates
    oy = y0 + (np.arange(out_h) + 0.5) * ((y1 - y0) / out_h)
    ox = x0 + (np.arange(out_w) + 0.5) * ((x1 - x0) / out_w)
    iy = oy * geometry.factor_y - geometry.offset_y - 0.5
    ix = ox * geometry.factor_x - geometry.offset_x - 0.5
    values = upsample(channel_map, target.axes(), iy, ix)
    low, high = float(channel_map.min()), float(channel_map.max())
    normalised = (values - low) / (high - low) if high > low else np.zeros_like(values)
    pixels = np.asarray(patch.convert("RGB"), dtype=np.float32)
    blended = (1 - HEATMAP_ALPHA) * pixels + HEATMAP_ALPHA * colorize(normalised)
    inside = ((oy >= 0) & (oy < geometry.original_height))[:, None] & (
        (ox >= 0) & (ox < geometry.original_width)
    )[None, :]
    pixels[inside] = blended[inside]
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    cy, cx = _unit_centre(target, size)
    # model-input pixel centre -> original coordinates -> patch pixels
    py = ((cy + 0.5 + geometry.offset_y) / geometry.factor_y - y0) * (out_h / (y1 - y0))
    px = ((cx + 0.5 + geometry.offset_x) / geometry.factor_x - x0) * (out_w / (x1 - x0))
    mark_unit(image, (py, px))
    return Rendered(image, box, clipped)


def mark_unit(image: Image.Image, centre: tuple[float, float]) -> None:
    """A ring around the winning unit's field centre (white with a black edge: visible on any
    colour of the map)."""
    y, x = centre
    radius = max(4.0, MARKER_RADIUS * min(image.size))  # the unit's own pixels stay visible
    draw = ImageDraw.Draw(image)
    for r, colour in ((radius + 1, (0, 0, 0)), (radius, (255, 255, 255))):
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=1)


class LayerActivations:
    """One channel's activation map for one image: the pruned, cached session of the layer
    run on that single preprocessed image (tiled when the model's batch is fixed above 1)."""

    def __init__(self, model: LoadedModel, layer: str, field: TensorField) -> None:
        self._model = model
        self._layer = layer
        self._field = field

    def __call__(self, array: Callable[[], np.ndarray], channel: int) -> np.ndarray:
        channel_map: np.ndarray = self.all_channels(array())[channel]
        return channel_map

    def cached(self, image_key: Hashable) -> ActivationFn:
        """The same maps, the layer run once per image (`image_key`) across requests."""
        key = (self._model.name, self._layer, image_key)

        def channel_map(array: Callable[[], np.ndarray], channel: int) -> np.ndarray:
            maps = layer_output(self._model, key, lambda: self.all_channels(array()))
            one: np.ndarray = maps[channel]
            return one

        return channel_map

    def all_channels(self, array: np.ndarray) -> np.ndarray:
        """[C, H', W']: the layer's output for one preprocessed image."""
        model = self._model
        size = _input_size(array, model.input.layout)
        session = model.session((self._layer,), size)
        batch = array[None]
        fixed = model.input.fixed_batch
        if fixed is not None and fixed > 1:
            batch = np.repeat(batch, fixed, axis=0)
        from maxact.server.models.runtime import run_failure, run_options  # only when run
        from maxact.server.models.working_set import reserve_run

        options = run_options(variable_shapes=model.input.fixed_size is None)
        with reserve_run(model, size, (self._layer,), batch.shape[0]):
            try:
                (output,) = model.sessions.first_run(
                    session, lambda: session.run([self._layer], {model.input.name: batch}, options)
                )
            except Exception as exc:
                failure = run_failure(model.name, exc)
                if failure is not None:
                    raise failure from None
                raise
        maps: np.ndarray = channels_first(np.asarray(output), self._field)[0]
        return maps


def _input_size(array: np.ndarray, layout: Layout) -> tuple[int, int]:
    """The (height, width) of one preprocessed image [C, H, W] or [H, W, C]."""
    if layout == Layout.NCHW:
        return int(array.shape[1]), int(array.shape[2])
    return int(array.shape[0]), int(array.shape[1])
