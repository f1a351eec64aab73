"""`maxact histogram|labels|similar|responses` and `neuron --quantile`: questions answered
from a finished scan's per-image responses (docs/responses.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maxact.client import text_out
from maxact.client.cli.common import add_channel, add_json, positive_int
from maxact.client.cli.output import connect, print_doc
from maxact.common import documents
from maxact.common.resources import scan_id

EXIT_OK = 0


def add_parsers(commands: Any) -> None:
    """Register `histogram`, `labels`, `similar` and `responses` on main.py's subparsers."""
    histogram = commands.add_parser(
        "histogram", help="how often a channel responds how strongly (from a scan's responses)"
    )
    _scan_layer(histogram)
    add_channel(histogram, "histogram")
    histogram.add_argument(
        "--bins", type=positive_int, default=50, metavar="N", help="default %(default)s"
    )
    add_json(histogram)
    labels = commands.add_parser(
        "labels",
        help="per channel, the class it separates best (ROC AUC, Mann-Whitney p, purity)",
    )
    _scan_layer(labels)
    add_json(labels)
    similar = commands.add_parser(
        "similar", help="the channels whose responses correlate most with a channel's"
    )
    _scan_layer(similar)
    add_channel(similar, "similar")
    similar.add_argument(
        "--top", type=positive_int, default=10, metavar="N", help="default %(default)s"
    )
    add_json(similar)
    export = commands.add_parser(
        "responses", help="write a layer's matrix R[image, channel] as .npy (and the image ids)"
    )
    _scan_layer(export)
    export.add_argument("--out", type=Path, required=True, metavar="FILE.npy")
    export.add_argument("--ids", type=Path, metavar="FILE.txt", help="the image ids, one a line")


def _scan_layer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan_id", metavar="SCAN_ID")
    parser.add_argument("layer", metavar="LAYER")


def cmd_histogram(args: argparse.Namespace) -> int:
    channel = int(args.channel)
    with connect(args) as client:
        found = client.responses.histogram(args.scan_id, args.layer, channel, args.bins)
    doc = documents.histogram_json(
        scan_id(args.scan_id), args.layer, channel, found.edges, found.counts
    )
    peak = max(found.counts, default=0) or 1
    rows = [
        (f"{found.edges[i]:.4g}", f"{found.edges[i + 1]:.4g}", count, "#" * (40 * count // peak))
        for i, count in enumerate(found.counts)
    ]
    print_doc(args, doc, text_out.table(("FROM", "TO", "IMAGES", ""), rows))
    return EXIT_OK


def cmd_labels(args: argparse.Namespace) -> int:
    with connect(args) as client:
        labels = client.responses.labels(args.scan_id, args.layer)
    doc = documents.labels_json(scan_id(args.scan_id), args.layer, labels)
    rows = [
        (
            found.channel,
            found.label if found.shown else f"({found.label or '-'})",
            f"{found.auc:.3f}",
            f"{found.p_value:.2g}",
            f"{found.purity:.2f}",
        )
        for found in sorted(labels, key=lambda f: (-(f.auc if f.auc == f.auc else -1), f.channel))
    ]
    text = text_out.table(("CHANNEL", "LABEL", "AUC", "P", "PURITY"), rows)
    print_doc(args, doc, text + "\n(labels in parentheses: AUC < 0.75, not shown beside channels)")
    return EXIT_OK


def cmd_similar(args: argparse.Namespace) -> int:
    channel = int(args.channel)
    with connect(args) as client:
        similar = client.responses.similar(args.scan_id, args.layer, channel, args.top)
    doc = documents.similar_json(channel, [(s.channel, s.correlation) for s in similar])
    rows = [(s.channel, f"{s.correlation:.3f}") for s in similar]
    text = (
        text_out.table(("CHANNEL", "CORRELATION"), rows)
        if rows
        else f"channel {channel} is constant over the images: no channel correlates with it"
    )
    print_doc(args, doc, text)
    return EXIT_OK


def cmd_responses(args: argparse.Namespace) -> int:
    with connect(args) as client:
        images, channels = client.responses.export(args.scan_id, args.layer, args.out, args.ids)
    ids = f" and {args.ids}" if args.ids is not None else ""
    print(f"wrote {args.out} ({images} images x {channels} channels, float32){ids}")
    return EXIT_OK


def print_quantile(args: argparse.Namespace, channel: int) -> int:
    """`neuron --quantile Q`: the neuron document of the images nearest the quantile."""
    with connect(args) as client:
        found = client.responses.quantile(
            args.scan_id, args.layer, channel, args.quantile, args.k or 0
        )
        scan = client.scans.get(args.scan_id)
    doc = documents.quantile_json(
        scan.model,
        args.layer,
        channel,
        args.quantile,
        found.value,
        [(e.rank, e.image, e.score) for e in found.examples],
        found.images_scanned,
    )
    rows = [(e.rank, f"{e.score:.4g}", e.image) for e in found.examples]
    text = f"quantile {args.quantile} of channel {channel}: {found.value:.4g}\n" + text_out.table(
        ("RANK", "SCORE", "IMAGE"), rows
    )
    print_doc(args, doc, text)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "histogram": cmd_histogram,
    "labels": cmd_labels,
    "similar": cmd_similar,
    "responses": cmd_responses,
}
