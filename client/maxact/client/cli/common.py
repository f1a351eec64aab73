"""What every `maxact` command module shares (main.py, scan_commands.py, preprocessing and
render flags) at parse time: the argparse value types, --json and --size."""

from __future__ import annotations

import argparse

# The parser and argument types live in maxact.common.arguments (the server's `serve` command
# line uses them too); re-exported here for the command modules.
from maxact.common.arguments import (
    EXIT_USAGE,
    MaxactParser,
    add_size,
    nonnegative_int,
    positive_int,
)

__all__ = [
    "EXIT_USAGE",
    "MaxactParser",
    "add_channel",
    "add_json",
    "add_size",
    "channel_from_args",
    "nonnegative_int",
    "positive_int",
]


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_channel(parser: argparse.ArgumentParser, command: str) -> None:
    """The channel as the positional after LAYER or as `--channel C` (both spellings in `topk`
    and `neuron`, so a habit from one works in the other)."""
    parser.add_argument("channel", type=nonnegative_int, nargs="?", default=None, metavar="CHANNEL")
    parser.add_argument(
        "--channel",
        dest="channel_flag",
        type=nonnegative_int,
        default=None,
        metavar="C",
        help=f"the channel (or give it as the positional after LAYER: {command} ... LAYER C)",
    )


def channel_from_args(args: argparse.Namespace, command: str) -> int:
    """The channel given positionally or with --channel (ValueError: neither, or two that
    differ); stored back in `args.channel` for the code that reads it there."""
    given = {c for c in (args.channel, args.channel_flag) if c is not None}
    if not given:
        raise ValueError(f"{command} needs a channel: maxact {command} ... LAYER --channel C")
    if len(given) > 1:
        raise ValueError(f"two different channels given: {sorted(given)}")
    args.channel = given.pop()
    return int(args.channel)
