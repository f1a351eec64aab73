"""The `maxact` command line: serve, models, upload, layers, rf, topk, scan, neuron, report, demo
(its contract: README.md, "The command line at a glance", and docs/cli.md)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from maxact.client import text_out
from maxact.client import types as t
from maxact.client.cli.class_commands import COMMANDS as CLASS_COMMANDS
from maxact.client.cli.class_commands import add_parsers as add_class_parsers
from maxact.client.cli.common import (
    EXIT_USAGE,
    MaxactParser,
    add_channel,
    add_json,
    add_size,
    channel_from_args,
    nonnegative_int,
    positive_int,
)
from maxact.client.cli.labels import class_names, labels_line, output_label
from maxact.client.cli.output import connect, print_doc, print_topk
from maxact.client.cli.render_args import add_render_arguments, render_options_from_args
from maxact.client.cli.response_commands import COMMANDS as RESPONSE_COMMANDS
from maxact.client.cli.response_commands import add_parsers as add_response_parsers
from maxact.client.cli.scan_commands import COMMANDS as SCAN_COMMANDS
from maxact.client.cli.scan_commands import add_parsers as add_scan_parsers
from maxact.client.client import Client
from maxact.client.errors import MaxactError
from maxact.client.images import collect_images
from maxact.client.progress import ProgressBar
from maxact.client.stream import TopKStream
from maxact.common import documents as json_out
from maxact.common.defaults import DEFAULT_K
from maxact.common.preprocessing import add_preprocessing_arguments, preprocessing_from_args
from maxact.common.version import maxact_version

if TYPE_CHECKING:  # argparse's classes are generic for type checkers only
    Commands: TypeAlias = argparse._SubParsersAction[MaxactParser]

PROG = "maxact"
EXIT_SERVER_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what `cat` and other Unix tools exit with


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI grammar; tests parse every command with it."""
    parser = MaxactParser(
        prog=PROG,
        description="Top-k activating image patches and receptive fields for ONNX CNNs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {maxact_version()}")
    add_global_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(commands)
    _add_models(commands)
    _add_datasets(commands)
    _add_upload(commands)
    _add_layers(commands)
    _add_rf(commands)
    _add_topk(commands)
    add_scan_parsers(commands)  # scan create|get|watch|cancel|list, neuron, report
    add_class_parsers(commands)  # classes, class, compare
    add_response_parsers(commands)  # histogram, labels, similar, responses
    _add_demo(commands)
    _accept_global_options_after_the_command(commands)
    return parser


def _add_serve(commands: Commands) -> None:
    """`serve`: a placeholder; the server parses its own flags."""
    # The flags of `serve` live in maxact.server.app alone: everything after `serve` is handed
    # to `python -m maxact.server` verbatim (serve_argv), which prints `maxact serve --help`.
    commands.add_parser(
        "serve", help="run the maxact server (needs maxact[server])", add_help=False
    )


def _add_models(commands: Commands) -> None:
    """`models` and its verbs `load` / `unload NAME`."""
    models = commands.add_parser(
        "models", help="list the models under the server's model root (or load / unload one)"
    )
    add_json(models)
    model_verbs = models.add_subparsers(dest="models_command", metavar="VERB")
    for verb, text in (
        ("load", "load and validate a model now rather than on first use"),
        ("unload", "drop the server's cached sessions and fields of a model (the file stays)"),
    ):
        verb_parser = model_verbs.add_parser(verb, help=text)
        verb_parser.add_argument("name", metavar="NAME")
        add_json(verb_parser)


def _add_datasets(commands: Commands) -> None:
    """`datasets`: the listing takes only --json."""
    datasets = commands.add_parser(
        "datasets", help="list the datasets under the server's data root"
    )
    add_json(datasets)


def _add_upload(commands: Commands) -> None:
    """`upload FILE`: the model's name, overwrite and its default preprocessing."""
    upload = commands.add_parser("upload", help="upload a local .onnx file to the model root")
    upload.add_argument("file", type=Path, metavar="FILE")
    upload.add_argument("--name", metavar="NAME", help="model name (default: the file's stem)")
    upload.add_argument("--overwrite", action="store_true", help="replace an existing model")
    upload.add_argument(
        "--preprocess-json",
        type=Path,
        metavar="F",
        help="default preprocessing (JSON object), stored as NAME.preprocess.json",
    )
    add_json(upload)


def _add_layers(commands: Commands) -> None:
    """`layers MODEL`: the input size matters only for dynamic H/W."""
    layers = commands.add_parser("layers", help="a model's layers with their receptive fields")
    layers.add_argument("model", metavar="MODEL")
    add_size(layers, "input size for models with dynamic H/W")
    add_json(layers)


def _add_rf(commands: Commands) -> None:
    """`rf MODEL LAYER`: a layer's field, or one unit's exact box."""
    rf = commands.add_parser("rf", help="the receptive field of a layer (or of one unit)")
    rf.add_argument("model", metavar="MODEL")
    rf.add_argument("layer", metavar="LAYER")
    rf.add_argument(
        "--unit", nargs=2, type=nonnegative_int, metavar=("Y", "X"), help="also its exact box"
    )
    rf.add_argument(
        "--intervals",
        action="store_true",
        help="with --unit --json: also every unit's rows/cols intervals (left out by default)",
    )
    add_size(rf, "input size for models with dynamic H/W")
    add_json(rf)


def _add_topk(commands: Commands) -> None:
    """`topk`: one channel, images from a server dataset or streamed from here, rendering."""
    topk = commands.add_parser("topk", help="the top-k image patches of one channel")
    topk.add_argument("model", metavar="MODEL")
    topk.add_argument("layer", metavar="LAYER")
    add_channel(topk, "topk")
    topk.add_argument(
        "-k", type=positive_int, default=DEFAULT_K, metavar="K", help="default %(default)s"
    )
    source = topk.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", metavar="NAME", help="a folder under the server's data root")
    source.add_argument(
        "--images",
        nargs="+",
        type=Path,
        metavar="DIR_OR_FILE",
        help="local image folders or files, streamed to the server (ids: the path relative to "
        "a folder, or a file's base name)",
    )
    topk.add_argument(
        "--keep-as-dataset",
        metavar="NAME",
        help="with --images: also store them on the server as dataset NAME (all or nothing)",
    )
    topk.add_argument(
        "--mode",
        choices=("image", "position"),
        default="image",
        help="image: an image's best unit counts once (k distinct images, default); "
        "position: every unit of every image competes (one image can fill the top-k)",
    )
    topk.add_argument("--bottom", action="store_true", help="the k weakest responses instead")
    topk.add_argument(
        "--unit", nargs=2, type=nonnegative_int, metavar=("Y", "X"), help="a single unit"
    )
    add_preprocessing_arguments(topk)
    add_render_arguments(topk)
    topk.add_argument("--out", type=Path, metavar="DIR", help="write rank_N.png and montage.png")
    add_json(topk)


def _add_demo(commands: Commands) -> None:
    """`demo`: where montages and the model/photo cache go."""
    demo = commands.add_parser("demo", help="a real CNN on real photos, montages in demo-out/")
    demo.add_argument("--out", type=Path, default=Path("demo-out"), metavar="DIR")
    demo.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="model and photo cache (default: $MAXACT_CACHE, else ~/.cache/maxact)",
    )
    demo.add_argument("-k", type=positive_int, default=8, metavar="K", help="default %(default)s")
    demo.add_argument(
        "--docs",
        type=Path,
        metavar="DIR",
        help="also write the README's pictures (montage, gallery, classes and web UI "
        "screenshots) into DIR; `make demo` passes docs",
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep the demo server and its web UI running until Ctrl-C (prints the URL)",
    )


def add_global_options(
    parser: argparse.ArgumentParser,
    default: object = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """--server, --token-file, --tls-ca (defaults from MAXACT_SERVER, MAXACT_TOKEN, MAXACT_TLS_CA
    at the top level; `default=argparse.SUPPRESS` on the commands, so that a flag given after
    the command overrides the top-level value and an absent one leaves it alone)."""
    environ = os.environ if environ is None else environ
    top = default is None
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=(environ.get("MAXACT_SERVER") or None) if top else default,
        help="maxact server (default: $MAXACT_SERVER, else 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="F",
        default=None if top else default,
        help="bearer token for a server started with --auth-token-file (default: $MAXACT_TOKEN, "
        "the token itself)",
    )
    ca = environ.get("MAXACT_TLS_CA")
    parser.add_argument(
        "--tls-ca",
        type=Path,
        metavar="F",
        default=(Path(ca) if ca else None) if top else default,
        help="CA certificate (PEM): connect with TLS (default: $MAXACT_TLS_CA)",
    )


def _accept_global_options_after_the_command(
    commands: Commands,
) -> None:
    """Every command (and sub-command) but `serve` (whose flags are the server's own) also
    takes the global options after its name: `maxact models --server H:P` works."""
    for name, sub in commands.choices.items():
        if name == "serve":
            continue
        add_global_options(sub, default=argparse.SUPPRESS)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):  # scan create|get|...
                _accept_global_options_after_the_command(action)


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The parsed command line and, for `serve`, the arguments after it exactly as typed (for
    maxact.server.app.main, which alone knows the flags of `serve`); exits 2 on bad usage."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if hasattr(args, "channel_flag"):  # topk, neuron: the channel positional or --channel
        try:
            channel_from_args(args, args.command)
        except ValueError as error:
            parser.error(str(error))
    return args, rest


def serve_argv(argv: Sequence[str]) -> list[str]:
    """The arguments after `serve`, exactly as typed, for maxact.server.app.main."""
    return parse(argv)[1]


def cmd_serve(argv: list[str]) -> int:
    """Run the server's own entry point (`python -m maxact.server`) with the arguments after
    `serve`. The client never imports the server: this process becomes the server (exec), so
    signals, exit code and output are the server's own."""
    if importlib.util.find_spec("maxact.server") is None:
        _error("the server is not installed; pip install 'maxact[server]'")
        return EXIT_USAGE
    command = [sys.executable, "-m", "maxact.server", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(sys.executable, command)  # does not return
    return subprocess.call(command)  # no exec on Windows: wait for the child instead


def cmd_models(args: argparse.Namespace) -> int:
    verb = getattr(args, "models_command", None)
    with connect(args) as client:
        if verb == "load":
            model = client.load_model(args.name)
            doc = {"name": model.name, "size_bytes": model.size_bytes, "loaded": model.loaded}
            print_doc(args, doc, f"loaded {model.name}")
            return 0
        if verb == "unload":
            client.unload_model(args.name)
            print_doc(args, {"name": args.name, "loaded": False}, f"unloaded {args.name}")
            return 0
        models = client.list_models()
    print_doc(args, json_out.models_json(models), text_out.models_text(models))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    with connect(args) as client:
        datasets = client.list_datasets()
    print_doc(args, json_out.datasets_json(datasets), text_out.datasets_text(datasets))
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise ValueError(f"no such file: {args.file}")
    preprocess = args.preprocess_json.read_text(encoding="utf-8") if args.preprocess_json else None
    with connect(args) as client:
        model = client.upload_model(
            args.file, args.name, overwrite=args.overwrite, preprocess_json=preprocess
        )
    doc = {"name": model.name, "size_bytes": model.size_bytes, "loaded": model.loaded}
    print_doc(args, doc, f"uploaded {model.name} ({model.size_bytes} bytes)")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.get_model(args.model, size=tuple(args.size) if args.size else None)
        names = class_names(client, args.model)
    doc = json_out.add_layer_labels(json_out.layers_json(info), names)
    print_doc(args, doc, text_out.layers_text(info) + labels_line(names))
    return 0


def cmd_rf(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.receptive_field(
            args.model,
            args.layer,
            unit=tuple(args.unit) if args.unit else None,
            size=tuple(args.size) if args.size else None,
        )
    doc = json_out.rf_json(info, intervals=True if args.intervals else None)
    print_doc(args, doc, text_out.rf_text(info))
    return 0


def run_topk(
    client: Client, args: argparse.Namespace, bar: ProgressBar | None = None
) -> t.TopKResult:
    """Run the scan with a progress display; Ctrl-C or an error cancels the server's scan."""
    bar = bar or ProgressBar(f"top-{args.k} {args.layer} channel {args.channel}")
    warned = False
    try:
        with _start_topk(client, args) as stream:
            for event in stream:
                if isinstance(event, t.Progress):
                    if event.preprocessing_warning:  # sent before the work starts
                        bar.note(f"{PROG}: warning: {event.preprocessing_warning}")
                        warned = True
                    bar.update(event.images_done, event.images_total, event.images_failed)
                elif isinstance(event, t.ImageSkipped):
                    bar.note(f"{PROG}: skipped {event.image}: {event.reason}")
            result = stream.result()
    finally:
        bar.close()
    # printed once: at the start (a server that sends it early) or after the run (an older one)
    return replace(result, preprocessing_warning="") if warned else result


def _start_topk(client: Client, args: argparse.Namespace) -> TopKStream:
    """The scan of --dataset on the server, or of the --images streamed from here."""
    options = {
        "k": args.k,
        "mode": args.mode,
        "bottom": args.bottom,
        "unit": tuple(args.unit) if args.unit else None,
        "preprocessing": preprocessing_from_args(args),
        **render_options_from_args(args),
    }
    if args.images:
        images = collect_images(args.images)  # ValueError (a usage error) before any call
        return client.topk_images(
            args.model,
            args.layer,
            args.channel,
            images,
            keep_as_dataset=args.keep_as_dataset,
            **options,
        )
    if args.keep_as_dataset:
        raise ValueError("--keep-as-dataset goes with --images")
    return client.topk(args.model, args.layer, args.channel, dataset=args.dataset, **options)


def cmd_topk(args: argparse.Namespace) -> int:
    with connect(args) as client:
        result = run_topk(client, args)
        label = output_label(client, args.model, args.layer, args.channel)
    print_topk(args, result, label)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from maxact.client.demo import run as demo

    return demo.run(
        out_dir=args.out, cache_dir=args.cache, k=args.k, docs_dir=args.docs, serve=args.serve
    )


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "models": cmd_models,
    "datasets": cmd_datasets,
    "upload": cmd_upload,
    "layers": cmd_layers,
    "rf": cmd_rf,
    "topk": cmd_topk,
    "demo": cmd_demo,
    **SCAN_COMMANDS,
    **CLASS_COMMANDS,
    **RESPONSE_COMMANDS,
}


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of what is still buffered
    does not raise BrokenPipeError again (the recipe of Python's signal documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (e.g. captured in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `maxact`; returns the exit code (1: server error, 2: usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, serve_args = parse(argv)
    try:
        if args.command == "serve":
            return cmd_serve(serve_args)
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so a closed pipe is noticed inside this try
        return code
    except MaxactError as error:
        _error(str(error))
        return EXIT_SERVER_ERROR
    except BrokenPipeError:  # `maxact ... | head`: the reader left; stop quietly
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except ValueError as error:  # a bad argument the parser could not see (e.g. preprocessing)
        _error(str(error))
        return EXIT_USAGE
    except OSError as error:
        _error(str(error))
        return EXIT_SERVER_ERROR
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
