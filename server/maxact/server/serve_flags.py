"""`maxact serve`'s command line, derived from `ServeSettings`: one flag per field, grouped and
explained as the field says. argparse only collects what was typed; pydantic-settings merges
it with the MAXACT_* variables and the defaults and validates all three the same way (the
command line wins over the environment)."""

from __future__ import annotations

import argparse
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from maxact.common.arguments import MaxactParser
from maxact.server.settings import Group, ServeSettings, env_name


def flag_name(field: str) -> str:
    """`model_root` -> `--model-root`."""
    return "--" + field.replace("_", "-")


def _group_of(info: FieldInfo) -> Group:
    extra = info.json_schema_extra
    assert isinstance(extra, dict), "every ServeSettings field is declared with setting()"
    return Group(extra["group"])


def _unwrap_optional(annotation: Any) -> Any:
    """`X | None` -> X (other annotations unchanged)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _help(name: str, info: FieldInfo) -> str:
    """The field's description, its default when it has a telling one, its variable."""
    text = info.description or ""
    default = info.default
    if not info.is_required() and default is not None and "default" not in text:
        text += f" (default {default})"
    return f"{text} [env {env_name(name)}]".replace("%", "%%")  # argparse formats help


def _add_flag(group: argparse._ArgumentGroup, name: str, info: FieldInfo) -> None:
    kind = _unwrap_optional(info.annotation)
    options: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _help(name, info)}
    if typing.get_origin(kind) is Literal:
        options["choices"] = list(typing.get_args(kind))
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    # a required setting given in the environment is no longer required on the command line
    options["required"] = info.is_required() and not os.environ.get(env_name(name))
    group.add_argument(flag_name(name), **options)


def serve_parser() -> argparse.ArgumentParser:
    """The `maxact serve` parser: every ServeSettings field as a flag in its help group."""
    parser = MaxactParser(
        prog="maxact serve",
        description="Run the maxact server. Every option can also be given as the environment "
        "variable named after it in brackets (the command line wins).",
    )
    groups = {group: parser.add_argument_group(group.value) for group in Group}
    for name, info in ServeSettings.model_fields.items():
        _add_flag(groups[_group_of(info)], name, info)
    return parser


def _describe(error: Mapping[str, Any], typed: Mapping[str, Any]) -> str:
    """One pydantic error as the user wrote it: the flag, or the $VARIABLE it came from."""
    field = str(error["loc"][0]) if error["loc"] else ""
    where = flag_name(field) if field in typed else f"${env_name(field)}"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def parse_serve_args(argv: list[str]) -> ServeSettings:
    """The settings `maxact serve ARGV` stands for; a bad flag or variable is a usage error
    (exit 2) naming it."""
    parser = serve_parser()
    typed = vars(parser.parse_args(argv))
    try:
        return ServeSettings(**typed)
    except ValidationError as error:
        parser.error("; ".join(_describe(e, typed) for e in error.errors()))
