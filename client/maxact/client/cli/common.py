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
    "add_json",
    "add_size",
    "nonnegative_int",
    "positive_int",
]


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
