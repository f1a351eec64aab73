"""`maxact classes`, `maxact class` and `maxact compare`: the questions people scan a labelled
dataset for, answered from a finished scan (no model run).

main.py only registers these (add_parsers + COMMANDS); the grammar, the documents and the
sentences live here.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from maxact.client import types as t
from maxact.client.cli.common import add_json, positive_int
from maxact.client.cli.output import connect, print_doc
from maxact.client.cli.render_args import quantile
from maxact.client.client import Client
from maxact.client.errors import MaxactError
from maxact.client.montage import render_montage, stack_rows
from maxact.client.patches_out import patch_file_name
from maxact.client.scans import ScanInfo
from maxact.client.text_out import classes_text, table
from maxact.common.defaults import DEFAULT_SELECTIVE, DEFAULT_TOP_CHANNELS, capped_k
from maxact.common.documents import class_json, classes_json, compare_json
from maxact.common.kinds import RENDER_MODES
from maxact.common.render_choice import layer_render

EXIT_OK = 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in 0..1, got {text}")
    return value


def add_parsers(commands: Any) -> None:
    """Register `classes`, `class` and `compare` on main.py's subparsers."""
    _add_classes(commands)
    _add_class(commands)
    compare = commands.add_parser(
        "compare", help="two scans of one dataset (e.g. two checkpoints): what changed per channel"
    )
    compare.add_argument("scan_a", metavar="SCAN_A")
    compare.add_argument("scan_b", metavar="SCAN_B")
    compare.add_argument("layer", metavar="LAYER")
    add_json(compare)


def _add_classes(commands: Any) -> None:
    classes = commands.add_parser(
        "classes",
        help="which channels fire for which class, which for everything, which classes no "
        "channel covers, which classes the layer confuses",
    )
    classes.add_argument("scan_id", metavar="SCAN_ID")
    classes.add_argument("layer", metavar="LAYER")
    classes.add_argument(
        "--selective",
        type=_fraction,
        default=DEFAULT_SELECTIVE,
        metavar="S",
        help="selectivity from which a channel counts as selective for its class "
        "(default %(default)s)",
    )
    classes.add_argument(
        "--top",
        type=positive_int,
        default=DEFAULT_TOP_CHANNELS,
        metavar="N",
        help="top channels per class",
    )
    add_json(classes)


def _add_class(commands: Any) -> None:
    one = commands.add_parser(
        "class", help="the channels that fire most for one class, with patches"
    )
    one.add_argument("scan_id", metavar="SCAN_ID")
    one.add_argument("layer", metavar="LAYER")
    one.add_argument("class_name", metavar="CLASS")
    one.add_argument("--top", type=positive_int, default=DEFAULT_TOP_CHANNELS, metavar="N")
    one.add_argument("-k", type=positive_int, default=None, metavar="K", help="patches per channel")
    one.add_argument(
        "--render",
        choices=RENDER_MODES,
        default=None,
        help="how patches are rendered, as for `neuron` (default: the layer's render, as in "
        "the report: mask where the receptive field exceeds half the input, else rf)",
    )
    one.add_argument(
        "--mask-quantile",
        type=quantile,
        default=None,
        metavar="Q",
        help="--render mask: per-image quantile of the upsampled activation (default 0.95)",
    )
    one.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write c<C>/rank_N.png, c<C>/montage.png and montage.png (a row per channel)",
    )
    add_json(one)


# ---------------------------------------------------------------- documents


def class_text(result: t.ClassChannels) -> str:
    if not result.channels:
        return (
            f"no channel of {result.layer} fires more for {result.class_name!r} than for the "
            "other classes"
        )
    rows = [
        (
            e.channel.channel,
            f"{e.channel.mean:.4g}",
            f"{e.channel.contrast:+.4g}",
            f"{e.channel.selectivity:.2f}",
            ", ".join(p.hit.image for p in e.patches[:4]) + (" ..." if len(e.patches) > 4 else ""),
        )
        for e in result.channels
    ]
    head = f"class {result.class_name!r} ({result.images} images), layer {result.layer}:"
    return head + "\n" + table(("CHANNEL", "MEAN", "CONTRAST", "SELECTIVITY", "TOP IMAGES"), rows)


def write_class_patches(
    result: t.ClassChannels, out: Path, tile: int = 128
) -> dict[int, dict[int, str]]:
    """c<C>/rank_N.png and c<C>/montage.png per channel, and montage.png with a row per
    channel (image names under the patches); returns channel -> rank -> relative file."""
    files: dict[int, dict[int, str]] = {}
    rows = []
    for entry in result.channels:
        channel = entry.channel.channel
        folder = out / f"c{channel}"
        folder.mkdir(parents=True, exist_ok=True)
        tiles = []
        files[channel] = {}
        for patch in entry.patches:
            name = patch_file_name(patch.hit.rank)
            (folder / name).write_bytes(patch.png)
            files[channel][patch.hit.rank] = f"c{channel}/{name}"
            with Image.open(io.BytesIO(patch.png)) as image:
                image.load()
                tiles.append((image.convert("RGB"), _short(patch.hit.image)))
        montage = render_montage(tiles, tile=tile)
        montage.save(folder / "montage.png")
        title = (
            f"channel {channel}  mean {entry.channel.mean:.3g}  contrast "
            f"{entry.channel.contrast:+.3g}  selectivity {entry.channel.selectivity:.2f}"
        )
        rows.append((title, montage))
    if rows:
        stack_rows(rows).save(out / "montage.png")
    return files


def _short(image: str, limit: int = 22) -> str:
    name = image.rsplit("/", 1)[-1]
    return name if len(name) <= limit else name[: limit - 1] + "…"


def compare_text(result: t.ScanComparison) -> str:
    changed = [c for c in result.channels if c.overlap < 1]
    head = (
        f"layer {result.layer}, scans {result.a} vs {result.b}: {len(changed)} of "
        f"{len(result.channels)} channels changed their top-{result.k} images"
    )
    rows = [
        (
            c.channel,
            f"{c.overlap:.2f}",
            f"{c.firing_rate[0]:.2f} -> {c.firing_rate[1]:.2f}",
            f"{c.mean[0]:.4g} -> {c.mean[1]:.4g}",
        )
        for c in result.channels[: max(len(changed), 10)]
    ]
    return head + "\n" + table(("CHANNEL", "OVERLAP", "FIRING RATE", "MEAN"), rows)


# ---------------------------------------------------------------- commands


def cmd_classes(args: argparse.Namespace) -> int:
    with connect(args) as client:
        answer = client.analysis.classes(args.scan_id, args.layer, args.selective, args.top)
    print_doc(args, classes_json(answer), classes_text(answer, args.selective))
    return EXIT_OK


def _layer_render(client: Client, scan: ScanInfo, layer: str) -> str:
    """The render the report gives `layer` of `scan` (judged at the size the scan ran at)."""
    try:
        model = client.get_model(scan.model, size=scan.input_size)
    except MaxactError:  # the model is gone or changed: the stored fields still crop rf
        return "rf"
    info = next((entry for entry in model.layers if entry.name == layer), None)
    return layer_render(info, scan.input_size)


def cmd_class(args: argparse.Namespace) -> int:
    with connect(args) as client:
        k, render = args.k, args.render
        if k is None or render is None:
            scan = client.scans.get(args.scan_id)
            k = capped_k(scan.k) if k is None else k  # default 9, never more than the scan kept
            render = render or _layer_render(client, scan, args.layer)
        result = client.analysis.class_channels(
            args.scan_id,
            args.layer,
            args.class_name,
            top=args.top,
            k=k,
            render=render,
            mask_quantile=args.mask_quantile,
        )
    files = write_class_patches(result, args.out) if args.out is not None else None
    print_doc(args, class_json(result, files, render), class_text(result))
    if args.out is not None and not args.json:
        print(f"wrote {len(result.channels)} channels' patches and {args.out / 'montage.png'}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    with connect(args) as client:
        result = client.analysis.compare(args.scan_a, args.scan_b, args.layer)
    print_doc(args, compare_json(result), compare_text(result))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "classes": cmd_classes,
    "class": cmd_class,
    "compare": cmd_compare,
}
