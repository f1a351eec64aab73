"""What the `maxact` command modules (main.py, scan_commands.py) share at run time: the connection
the global options describe, and printing a document as JSON or text."""

from __future__ import annotations

import argparse
import sys

from maxact.client import text_out
from maxact.client import types as t
from maxact.client.channel import read_token_file
from maxact.client.client import Client
from maxact.client.patches_out import write_patches
from maxact.client.responses import ChannelLabel
from maxact.common import documents as json_out


def connect(args: argparse.Namespace) -> Client:
    """A client for the global --server / --token-file / --tls-ca options."""
    token = read_token_file(args.token_file) if args.token_file else None
    return Client(args.server, token=token, tls_ca=args.tls_ca)


def print_doc(args: argparse.Namespace, doc: object, text: str) -> None:
    print(json_out.dumps(doc) if args.json else text)


def warn(message: str) -> None:
    """A server's warning (e.g. default preprocessing) on stderr, one line, never on stdout."""
    if message:
        print(f"maxact: warning: {message}", file=sys.stderr)


def print_topk(
    args: argparse.Namespace,
    result: t.TopKResult,
    label: str | None = None,
    found: ChannelLabel | None = None,
) -> None:
    """`topk` and `neuron` output: the document or table, and with --out the patch files;
    `label`: the class name of a named logits channel; `found`: the label the scan's
    responses give the channel."""
    warn(result.preprocessing_warning)
    files = write_patches(result, args.out) if args.out is not None else None
    render = getattr(args, "render", "rf")
    doc = json_out.topk_json(result, files, render)
    text = text_out.topk_text(result, files, render)
    if label is not None:
        doc["label"] = label
        text = f"class {label!r}\n{text}"
    if found is not None:
        doc["label"] = found.label
        doc["label_auc"] = found.auc
        figures = f"AUC {found.auc:.3f}, purity {found.purity:.2f}"
        text = f"{text.rstrip()}\nlabel {found.label!r} ({figures})"
    print_doc(args, doc, text)
    if args.out is not None and not args.json:
        print(f"wrote {len(result.patches)} patches and {args.out / 'montage.png'}")
