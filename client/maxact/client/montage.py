"""Montages: k patches in a row with rank and score under each, and rows stacked with titles."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
GAP = 8
MARGIN = 8
CHAR_WIDTH = 6  # px of a character of Pillow's built-in font


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font: no font files to ship or find."""
    return ImageFont.load_default()


def _text_size(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def fit_tile(patch: Image.Image, tile: int) -> Image.Image:
    """Scale to fit tile x tile keeping aspect; nearest-neighbour when enlarging so small
    patches stay crisp pixels instead of blur."""
    image = patch.convert("RGB")
    w, h = image.size
    if w <= 0 or h <= 0:
        return Image.new("RGB", (1, 1), BACKGROUND)
    factor = tile / max(w, h)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if size == image.size:
        return image
    resample = Image.Resampling.NEAREST if factor > 1 else Image.Resampling.LANCZOS
    return image.resize(size, resample)


def caption(rank: int, score: float) -> str:
    """The caption under a tile, e.g. '#1  12.34'."""
    score += 0.0  # -0.0 -> 0.0: "-0" reads like a bug
    return f"#{rank}  {score:.4g}" if abs(score) < 1e5 else f"#{rank}  {score:.3e}"


def image_caption(rank: int, score: float, image: str, tile: int) -> str:
    """'#rank  score' and, on a second line, the image's name (its end when too long for the
    tile: file names differ at the end more often than at the start)."""
    room = max(4, tile // CHAR_WIDTH)
    name = image if len(image) <= room else "…" + image[-(room - 1) :]
    return f"{caption(rank, score)}\n{name}"


def render_montage(patches: Sequence[tuple[Image.Image, str]], tile: int = 160) -> Image.Image:
    """One row of tiles, each patch centred in its tile with its caption underneath."""
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = max(
        [_text_size(probe, c, font)[1] for _, c in patches] + [_text_size(probe, "#1", font)[1]]
    )
    count = max(1, len(patches))
    width = 2 * MARGIN + count * tile + (count - 1) * GAP
    height = 2 * MARGIN + tile + 4 + text_h + 2
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, (patch, text) in enumerate(patches):
        left = MARGIN + i * (tile + GAP)
        fitted = fit_tile(patch, tile)
        fw, fh = fitted.size
        canvas.paste(fitted, (left + (tile - fw) // 2, MARGIN + (tile - fh) // 2))
        tw, _ = _text_size(draw, text, font)
        draw.multiline_text(
            (left + max(0, (tile - tw) // 2), MARGIN + tile + 4),
            text,
            fill=INK,
            font=font,
            align="center",
        )
    return canvas


def stack_rows(rows: Sequence[tuple[str, Image.Image]]) -> Image.Image:
    """Stack montages vertically, each under its title (e.g. 'layer / channel 3')."""
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_h = max([_text_size(probe, title, font)[1] for title, _ in rows] + [1])
    width = max(
        [image.width for _, image in rows]
        + [_text_size(probe, t, font)[0] + 2 * MARGIN for t, _ in rows]
        + [1]
    )
    height = sum(title_h + 6 + image.height + GAP for _, image in rows) + MARGIN
    canvas = Image.new("RGB", (width, max(1, height)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = MARGIN
    for title, image in rows:
        draw.text((MARGIN, y), title, fill=INK, font=font)
        y += title_h + 6
        canvas.paste(image.convert("RGB"), (0, y))
        y += image.height + GAP
    return canvas
