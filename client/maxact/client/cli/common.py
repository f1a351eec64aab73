"""What every `maxact` command module shares (cli.py, scan_cli.py, preprocessing and render
flags) at parse time: the argparse value types, --json and --size."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_USAGE = 2


class MaxactParser(argparse.ArgumentParser):
    """Usage errors of every maxact command (`maxact serve` too) read `maxact: error: ...`
    (exit 2): one prefix to grep."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"maxact: error: {message}\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout (DESIGN §3)"
    )


def add_size(parser: argparse._ActionsContainer, help_text: str) -> None:
    """`--size H W`: an input size for dynamic-size models, or the preprocessing resize."""
    parser.add_argument("--size", nargs=2, type=positive_int, metavar=("H", "W"), help=help_text)
