"""`--render rf|heatmap|mask --mask-quantile Q --patch-size N` for `topk` and `neuron`."""

from __future__ import annotations

import argparse
from typing import Any

from maxact.client.cli.common import nonnegative_int
from maxact.common.defaults import DEFAULT_MASK_QUANTILE
from maxact.common.kinds import RENDER_MODES


def quantile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1: {text!r}")
    return value


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("patch rendering (server side)")
    group.add_argument(
        "--render",
        choices=RENDER_MODES,
        default="rf",
        help="rf: the receptive field cropped from the original photo, grey past the photo's "
        "edge (default); heatmap: rf with the activation map overlaid (blue low, red high) and a "
        "ring on the winning unit; mask: NetDissect style, the box of the activation above "
        "the image's --mask-quantile around the unit (for deep layers, whose field is larger "
        "than the input)",
    )
    group.add_argument(
        "--mask-quantile",
        type=quantile,
        default=None,
        metavar="Q",
        help="--render mask: per-image quantile of the upsampled activation "
        f"(default {DEFAULT_MASK_QUANTILE})",
    )
    group.add_argument(
        "--patch-size",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="letterbox every patch into N x N (grey bands; 0: own size)",
    )


def render_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for Client.topk / topk_images / scans.neuron."""
    return {
        "render": getattr(args, "render", "rf"),
        "mask_quantile": getattr(args, "mask_quantile", None),
        "patch_size": getattr(args, "patch_size", 0),
    }
