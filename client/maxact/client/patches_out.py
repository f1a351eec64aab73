"""Write a top-k result to a folder: rank_N.png as received, plus montage.png."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from maxact.client import types as t
from maxact.client.montage import image_caption, render_montage

MONTAGE_FILE = "montage.png"


def patch_file_name(rank: int) -> str:
    return f"rank_{rank}.png"


def montage_of(result: t.TopKResult, tile: int = 160) -> Image.Image:
    """The k patches of a result in a row, '#rank  score' and the image's name under each."""
    tiles = []
    for patch in result.patches:
        with Image.open(io.BytesIO(patch.png)) as image:
            image.load()
            hit = patch.hit
            tiles.append((image.copy(), image_caption(hit.rank, hit.score, hit.image, tile)))
    return render_montage(tiles, tile=tile)


def write_patches(result: t.TopKResult, out_dir: Path, tile: int = 160) -> dict[int, str]:
    """Write each patch's PNG bytes unchanged and the montage; returns rank -> file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[int, str] = {}
    for patch in result.patches:
        name = patch_file_name(patch.hit.rank)
        (out_dir / name).write_bytes(patch.png)
        files[patch.hit.rank] = name
    montage_of(result, tile=tile).save(out_dir / MONTAGE_FILE)
    return files
