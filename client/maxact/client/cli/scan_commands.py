"""`maxact scan create|get|watch|cancel|list`, `maxact neuron` and `maxact report` (docs/cli.md,
"Scans, neuron queries and the HTML gallery").

main.py only registers these (add_parsers + COMMANDS); the grammar and the commands live here.
Exit codes follow main.py: 0 ok, 1 server error (and a scan that ended failed or cancelled
under `scan create --wait` / `scan watch`), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maxact.client import text_out
from maxact.client import types as t
from maxact.client.cli.common import (
    add_channel,
    add_json,
    add_size,
    channel_from_args,
    nonnegative_int,
    positive_int,
)
from maxact.client.cli.labels import output_label, response_label
from maxact.client.cli.output import connect, print_doc, print_topk, warn
from maxact.client.cli.render_args import add_render_arguments, render_options_from_args
from maxact.client.progress import ProgressBar
from maxact.client.scans import ScanInfo
from maxact.common.defaults import DEFAULT_K, DEFAULT_MASK_QUANTILE, capped_k
from maxact.common.documents import deleted_json, scan_json, scans_json
from maxact.common.documents import neuron_result as neuron_result_of
from maxact.common.kinds import RENDER_MODES, ResponsesMode, ScanState, TopKMode
from maxact.common.preprocessing import add_preprocessing_arguments, preprocessing_from_args
from maxact.common.resources import scan_id

EXIT_OK = 0
EXIT_SCAN_NOT_SUCCEEDED = 1


# ---------------------------------------------------------------- JSON documents and tables


def _progress(info: ScanInfo) -> str:
    text = f"{info.images_done}/{info.images_total}"
    return text + (f" ({info.images_failed} skipped)" if info.images_failed else "")


def scan_text(info: ScanInfo) -> str:
    lines = [
        f"scan     {info.id}",
        f"state    {info.state}",
        f"images   {_progress(info)}",
        f"model    {info.model}",
        f"layers   {' '.join(info.layers)}",
        f"dataset  {info.dataset}",
        f"k        {info.k} ({info.mode} mode)",
    ]
    if info.preprocessing is not None:
        lines.append(f"preprocessing {text_out.preprocessing_text(info.preprocessing)}")
    if info.error:
        lines.append(f"error    {info.error}")
    return "\n".join(lines)


def scans_text(scans: list[ScanInfo]) -> str:
    if not scans:
        return "no scans"
    rows = [
        (s.id, s.state, _progress(s), s.model, s.dataset, s.k, " ".join(s.layers)) for s in scans
    ]
    return text_out.table(("ID", "STATE", "IMAGES", "MODEL", "DATASET", "K", "LAYERS"), rows)


# ---------------------------------------------------------------- grammar


def add_parsers(commands: Any) -> None:
    """Register `scan`, `neuron` and `report` on main.py's subparsers."""
    scan = commands.add_parser("scan", help="persisted scans of whole layers on the server")
    verbs = scan.add_subparsers(dest="scan_command", metavar="VERB", required=True)
    _add_scan_create(verbs)
    _add_scan_by_id(verbs)
    _add_scan_list(verbs)
    _add_neuron(commands)
    _add_report(commands)


def _add_scan_create(verbs: Any) -> None:
    """`scan create`: what to scan, how to rank, and whether to wait for the end."""
    create = verbs.add_parser(
        "create", help="start a scan of every channel of some layers; prints the scan id"
    )
    create.add_argument("model", metavar="MODEL")
    create.add_argument("--layers", nargs="+", required=True, metavar="L")
    create.add_argument("--dataset", required=True, metavar="NAME")
    create.add_argument(
        "-k", type=positive_int, default=DEFAULT_K, metavar="K", help="default %(default)s"
    )
    create.add_argument(
        "--mode",
        choices=[m.value for m in TopKMode],
        default="image",
        help="image: an image's best unit counts once (k distinct images, default); "
        "position: every unit of every image competes",
    )
    add_preprocessing_arguments(create)
    create.add_argument(
        "--request-id",
        metavar="ID",
        help="idempotency key: re-running with the same ID returns the scan the first run"
        " created instead of starting another (default: a new random id)",
    )
    create.add_argument(
        "--responses",
        choices=[m.value for m in ResponsesMode],
        default="auto",
        help="keep each image's maximum response per channel, for histogram, labels, similar,"
        " responses and neuron --quantile (auto, the default: while it fits the server's"
        " --max-responses-mb)",
    )
    create.add_argument(
        "--wait",
        action="store_true",
        help="watch until the scan ends (progress on stderr); exit 1 unless it succeeded",
    )
    add_json(create)


def _add_scan_by_id(verbs: Any) -> None:
    """`scan get|watch|cancel|delete`: one scan named by its id, nothing else."""
    for verb, text in (
        ("get", "a scan's state and progress"),
        ("watch", "follow a scan until it ends (exit 1 unless it succeeded)"),
        ("cancel", "stop a queued or running scan"),
        ("delete", "remove a scan and its results (a running scan is cancelled first)"),
    ):
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument("scan_id", metavar="SCAN_ID")
        add_json(parser)


def _add_scan_list(verbs: Any) -> None:
    """`scan list`: every scan, no arguments but --json."""
    listing = verbs.add_parser("list", help="every scan, newest first")
    add_json(listing)


def _add_neuron(commands: Any) -> None:
    """`neuron`: one channel's patches read from a finished scan (the channel as positional
    or flag)."""
    neuron = commands.add_parser(
        "neuron", help="the top-k patches of one channel from a finished scan (no model run)"
    )
    neuron.add_argument("scan_id", metavar="SCAN_ID")
    neuron.add_argument("layer", metavar="LAYER")
    add_channel(neuron, "neuron")
    neuron.add_argument(
        "-k",
        type=positive_int,
        default=None,
        metavar="K",
        help=f"default {DEFAULT_K}, or the scan's k when it kept fewer",
    )
    neuron.add_argument("--bottom", action="store_true", help="the k weakest responses instead")
    neuron.add_argument(
        "--quantile",
        type=float,
        default=None,
        metavar="Q",
        help="the k images whose response is nearest the channel's Q-quantile (0..1): what it"
        " does at ordinary strength (needs a scan that kept its responses)",
    )
    add_render_arguments(neuron)
    neuron.add_argument("--out", type=Path, metavar="DIR", help="write rank_N.png and montage.png")
    add_json(neuron)


def _add_report(commands: Any) -> None:
    """`report`: the static HTML gallery of a finished scan and how its patches are drawn."""
    report = commands.add_parser(
        "report", help="a static HTML gallery of a finished scan (opens from disk)"
    )
    report.add_argument("scan_id", metavar="SCAN_ID")
    where = report.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, metavar="DIR")
    where.add_argument(
        "--single-file",
        type=Path,
        metavar="FILE",
        help="instead: ONE self-contained page (images as data URIs, no script) for MLflow, "
        "W&B or Kubeflow",
    )
    report.add_argument(
        "-k",
        type=positive_int,
        default=None,
        metavar="K",
        help=f"patches per neuron (default {DEFAULT_K}, at most the scan's k)",
    )
    report.add_argument(
        "--patch-size",
        type=nonnegative_int,
        default=128,
        metavar="N",
        help="fit every patch into N x N px, saved as JPEG, PNG for tiny fields "
        "(default %(default)s; 0: each patch at its own size, PNG: large)",
    )
    report.add_argument(
        "--render",
        choices=RENDER_MODES,
        default=None,
        help="how patches are drawn (default: per layer, rf while the receptive field fits "
        "in half the input, mask beyond: a deep layer's field is mostly outside the crop)",
    )
    report.add_argument(
        "--mask-quantile",
        type=float,
        default=None,
        metavar="Q",
        help="--render mask: per-image quantile of the activation map "
        f"(default {DEFAULT_MASK_QUANTILE})",
    )
    report.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --out, replacing an earlier report there",
    )
    add_size(
        report,
        "input size for the receptive fields of a model with dynamic H/W "
        "(default: the size the scan ran at)",
    )


# ---------------------------------------------------------------- commands


def follow(client: Any, info: ScanInfo, stream: Any = None) -> ScanInfo:
    """Watch a scan until it ends, with a progress bar on stderr; returns its last state."""
    bar = ProgressBar(f"scan {info.id}", stream=stream)
    last = info
    try:
        if not info.finished:
            for last in client.scans.watch(info.id):
                bar.update(last.images_done, last.images_total, last.images_failed)
    except KeyboardInterrupt:
        bar.close()
        print(
            f"maxact: stopped watching; scan {info.id} goes on "
            f"(maxact scan cancel {info.id} stops it)",
            file=sys.stderr,
        )
        raise
    bar.close()
    return last


def _ended(info: ScanInfo) -> int:
    """Exit status of a scan followed to its end: 0 only when it succeeded."""
    if info.state == ScanState.SUCCEEDED:
        return EXIT_OK
    detail = f": {info.error}" if info.error else ""
    print(f"maxact: error: scan {info.id} {info.state}{detail}", file=sys.stderr)
    return EXIT_SCAN_NOT_SUCCEEDED


def cmd_scan(args: argparse.Namespace) -> int:
    verb = args.scan_command
    with connect(args) as client:
        if verb == "create":
            info = client.scans.create(
                args.model,
                list(args.layers),
                args.dataset,
                k=args.k,
                mode=args.mode,
                preprocessing=preprocessing_from_args(args),
                request_id=args.request_id,
                responses=args.responses,
            )
            warn(info.preprocessing_warning)
            code = EXIT_OK
            if args.wait:
                info = follow(client, info)
                code = _ended(info)
            # text mode prints the bare id so `ID=$(maxact scan create ...)` works
            print_doc(args, scan_json(info), info.id)
            return code
        if verb == "list":
            scans = client.scans.list()
            print_doc(args, scans_json(scans), scans_text(scans))
            return EXIT_OK
        if verb == "get":
            info = client.scans.get(args.scan_id)
            print_doc(args, scan_json(info), scan_text(info))
            return EXIT_OK
        if verb == "cancel":
            info = client.scans.cancel(args.scan_id)
            print_doc(args, scan_json(info), f"scan {info.id} {info.state}")
            return EXIT_OK
        if verb == "delete":
            client.delete_scan(args.scan_id)
            deleted = scan_id(args.scan_id)
            print_doc(args, deleted_json(deleted), f"scan {deleted} deleted")
            return EXIT_OK
        if verb == "watch":
            info = follow(client, client.scans.get(args.scan_id))
            print_doc(args, scan_json(info), scan_text(info))
            return _ended(info)
    raise ValueError(f"unknown scan command {verb!r}")  # pragma: no cover - argparse refuses


def neuron_result(
    client: Any,
    scan_id: str,
    layer: str,
    channel: int,
    k: int | None = None,
    bottom: bool = False,
    **render: Any,
) -> t.TopKResult:
    """A finished scan's top-k (or bottom-k) of one channel with patches, as a TopKResult so the
    topk writers (JSON, table, rank_N.png + montage.png) serve it unchanged. `render`:
    render, mask_quantile, patch_size (see Client.topk)."""
    if k is None:  # the default, but never more than the scan kept
        k = capped_k(client.scans.get(scan_id).k)
    scan, patches, scanned = client.scans.neuron(
        scan_id, layer, channel, k=k, bottom=bottom, **render
    )
    return neuron_result_of(scan, layer, channel, k, bottom, patches, scanned)


def neuron_channel(args: argparse.Namespace) -> int:
    """`neuron`'s channel, positional or --channel (ValueError: neither, or two that differ)."""
    return channel_from_args(args, "neuron")


def cmd_neuron(args: argparse.Namespace) -> int:
    channel = neuron_channel(args)
    if args.quantile is not None:
        from maxact.client.cli.response_commands import print_quantile

        return print_quantile(args, channel)
    with connect(args) as client:
        result = neuron_result(
            client,
            args.scan_id,
            args.layer,
            channel,
            k=args.k,
            bottom=args.bottom,
            **render_options_from_args(args),
        )
        label = output_label(client, result.model, args.layer, args.channel)
        found = (
            None if label is not None else response_label(client, args.scan_id, args.layer, channel)
        )
    print_topk(args, result, label, found)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from maxact.client.report.single_file import write_single_file
    from maxact.client.report.writer import write_report

    options = {
        "k": args.k,
        "size": tuple(args.size) if args.size else None,
        "progress": ProgressBar(f"report {args.scan_id}", unit="channels"),
        "patch_size": args.patch_size,
        "render": args.render,
        "mask_quantile": args.mask_quantile,
    }
    with connect(args) as client:
        if args.single_file is not None:
            written = write_single_file(client, args.scan_id, args.single_file, **options)
        else:
            written = write_report(client, args.scan_id, args.out, force=args.force, **options)
    print(f"wrote {written}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "scan": cmd_scan,
    "neuron": cmd_neuron,
    "report": cmd_report,
}
