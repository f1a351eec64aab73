"""Micro benchmark: the `mask` render's box, old (`render.whole_map_mask_box`: the whole map
upsampled to the input, as before) against new (`render.mask_box`: only the blocks that can
hold mask pixels), in one run.

PP-OCRv4 det geometry (field 315, stride 16, padding 157; a 46 x 63 map, input 736 x 1008;
quantile 0.95). Maps: smoothed ReLU maps (text-line-like blobs), sparse ReLU maps, and the worst
case for the new path: a ReLU map whose 0.95 quantile is 0 (`no-pruning`: the whole map is
upsampled as before, after the block bounds). Every box is checked equal to the old one; the
units are random (the seed often outside the mask: the nearest-pixel rule runs too).

Run: PYTHONPATH=. .venv/bin/python bench/mask_box_bench.py [--maps 12] [--units 6]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from fractions import Fraction

import numpy as np
from scipy import ndimage

from maxact.server.patches.mask_cells import cell_mask
from maxact.server.patches.render import PatchTarget, mask_box, whole_map_mask_box
from maxact.server.rf import AxisGeometry
from maxact.server.rf.fields import ChannelGroupField, TensorField

SHAPE = (46, 63)
SIZE = (736, 1008)
QUANTILE = 0.95
AXIS = AxisGeometry(Fraction(315), Fraction(16), Fraction(157))


def maps(kind: str, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """float32 46 x 63 maps of one kind."""
    out = []
    for _ in range(count):
        noise = rng.normal(0, 1, SHAPE)
        if kind == "smooth":  # blobs and lines: ~30% of the units positive
            smooth = ndimage.gaussian_filter(noise, (1.0, 3.0))
            values = np.maximum(smooth - np.quantile(smooth, 0.7), 0)
        else:  # ReLU of noise: ~8%, ~2% or ~0.3% of the units positive
            values = np.maximum(
                noise - {"sparse": 1.4, "sparser": 2.05, "no-pruning": 2.75}[kind], 0
            )
        out.append(values.astype(np.float32))
    return out


def target(unit: tuple[int, int]) -> PatchTarget:
    group = ChannelGroupField(0, 0, AXIS, AXIS, (), ())
    field = TensorField("t", True, 1, *SHAPE, 1, 2, 3, (group,), False, *SIZE)
    return PatchTarget((0, 0, 0, 0), unit, 0, field)


def timed(fn: Callable[..., object], args: tuple[object, ...], repeats: int) -> float:
    """The best of `repeats` calls, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", type=int, default=12)
    parser.add_argument("--units", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"map {SHAPE[0]}x{SHAPE[1]}, input {SIZE[0]}x{SIZE[1]}, quantile {QUANTILE}")
    print(f"{'maps':10} {'patches':>7} {'whole map':>9} {'old ms':>8} {'new ms':>8} {'old/new':>8}")
    for kind in ("smooth", "sparse", "sparser", "no-pruning"):
        old, new, whole = [], [], 0
        for channel_map in maps(kind, args.maps, rng):
            whole += cell_mask(channel_map, (AXIS, AXIS), SIZE, QUANTILE) is None
            for _ in range(args.units):
                unit = (int(rng.integers(SHAPE[0])), int(rng.integers(SHAPE[1])))
                hit = target(unit)
                assert mask_box(channel_map, hit, SIZE, QUANTILE) == whole_map_mask_box(
                    channel_map, hit, SIZE, QUANTILE
                )
                old.append(
                    timed(whole_map_mask_box, (channel_map, hit, SIZE, QUANTILE), args.repeats)
                )
                new.append(timed(mask_box, (channel_map, hit, SIZE, QUANTILE), args.repeats))
        o, n = 1000 * statistics.mean(old), 1000 * statistics.mean(new)
        print(f"{kind:10} {len(old):7d} {whole:4d}/{args.maps:<4d} {o:8.2f} {n:8.2f} {o / n:7.2f}x")


if __name__ == "__main__":
    main()
