"""Command-line building blocks shared by `maxact` and `maxact serve`: the parser whose usage
errors read `maxact: error: ...`, the number argument types, and options that also read
MAXACT_* environment variables.

It lives in the client package (which the server may import, never the other way round) and
imports nothing of maxact, so both command lines can use it without an import cycle. argparse
stays: the standard library covers everything these command lines need.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping
from typing import NoReturn

EXIT_USAGE = 2
ENV_PREFIX = "MAXACT_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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


def positive_float(text: str) -> float:
    """A finite number > 0 (`nan` and `inf` parse as floats but bound nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0: {text!r}")
    return value


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


def add_size(parser: argparse._ActionsContainer, help_text: str, flag: str = "--size") -> None:
    """`--size H W` (or `flag H W`): an input size for dynamic-size models, the preprocessing
    resize, crop or letterbox."""
    parser.add_argument(flag, nargs=2, type=positive_int, metavar=("H", "W"), help=help_text)


def env_name(option: str) -> str:
    """`--model-root` -> `MAXACT_MODEL_ROOT`."""
    return ENV_PREFIX + option.lstrip("-").upper().replace("-", "_")


def _from_env(action: argparse.Action, name: str, text: str) -> object:
    """The value of `action` that environment variable `name` = `text` stands for."""
    if isinstance(action, argparse._StoreTrueAction):
        if text.lower() not in _TRUE | _FALSE:
            raise ValueError(f"${name}: expected 1/0, true/false, yes/no or on/off: {text!r}")
        return text.lower() in _TRUE
    parts = text.split() if action.nargs not in (None, "?") else [text]
    try:
        values = [action.type(part) if callable(action.type) else part for part in parts]
    except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
        raise ValueError(f"${name}: {error}") from None
    for value in values:
        if action.choices is not None and value not in action.choices:
            allowed = ", ".join(map(str, action.choices))
            raise ValueError(f"${name}: {value!r} is not one of {allowed}")
    return values if action.nargs not in (None, "?") else values[0]


def defaults_from_environment(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Every long option `--foo-bar` of `parser` takes its default from $MAXACT_FOO_BAR when
    that is set (the command line still wins); its help names the variable. A required
    option set in the environment is no longer required. A bad value is a usage error."""
    environ = os.environ if environ is None else environ
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest == "help" or action.default == argparse.SUPPRESS:
            continue
        name = env_name(longs[0])
        action.help = f"{action.help or ''} [env {name}]".lstrip()
        if name in environ:
            try:
                action.default = _from_env(action, name, environ[name])
            except ValueError as error:
                parser.error(str(error))
            action.required = False
