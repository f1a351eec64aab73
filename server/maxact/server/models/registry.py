"""The model registry: find models under the root, load them safely, and cache what they need.

A loaded model keeps, per concrete input size, its tensor shapes, receptive fields and layer
catalogue (computed once), and one onnxruntime session per set of exposed tensors.
"""

from __future__ import annotations

import difflib
import logging
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from cachetools import LRUCache
from google.protobuf.message import DecodeError

from maxact.common.kinds import Layout
from maxact.server.data.preprocess import (
    Preprocessing,
    ResolvedPreprocessing,
    parse_json,
    resolve,
)
from maxact.server.errors import (
    ServiceError,
    failed_precondition,
    invalid_argument,
    not_found,
    shown,
)
from maxact.server.graph.reductions import (
    LayerReduction,
    Uint8Feed,
    feeds_of,
    with_reductions,
    with_uint8_input,
)
from maxact.server.graph.shapes import infer_shapes_reporting
from maxact.server.graph.surgery import ImageInput, image_input, prune_to_outputs
from maxact.server.limits import check_input_pixels
from maxact.server.models.feedable import (
    external_data_problem,
    tensor_problem,
    text_problem,
    unsupported_input,
)
from maxact.server.models.run_peaks import RunPeaks
from maxact.server.models.runtime import create_session
from maxact.server.models.session_cost import pruned_size_bytes
from maxact.server.models.sessions import DEFAULT_MAX_BYTES, SessionCache
from maxact.server.ops.memory import BudgetedCache
from maxact.server.ops.process import release_free_memory
from maxact.server.paths import check_name, is_inside, resolve_under
from maxact.server.rf import FieldError, ReceptiveFields, TensorField, compute_receptive_fields

MODEL_SUFFIX = ".onnx"
PREPROCESS_SIDECAR_SUFFIX = ".preprocess.json"
PREPROCESS_METADATA_KEY = "maxact.preprocess"
# Side multiples tried, smallest first, to tell a user which sizes a model takes when shapes
# cannot be inferred at the requested one (detectors and OCR models want multiples of 32).
SIZE_MULTIPLES = (8, 16, 32, 64, 128)
# Bytes of input sizes' shapes, fields and catalogues a model keeps (least recently used
# dropped first; per-image sizing brings one size per aspect ratio): PP-OCRv4 det's is 7.4 MB
# per size. Charged VIEW_COST_FACTOR x its pickled size: measured with tracemalloc, a view
# holds 2.4x (a 5-layer CNN) to 7.6x (PP-OCRv4 det) its pickle (tested: `view_cost`).
SIZE_VIEWS_MAX_BYTES = 512 * 1024 * 1024
VIEW_COST_FACTOR = 8
MAX_SIZE_MULTIPLES = 256  # sizes whose "wants multiples of M" answer is remembered
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerEntry:
    """One catalogue row: a tensor a neuron can be chosen from."""

    name: str
    op: str
    shape: tuple[int, ...]  # without batch: [C, H, W] or [features]
    field: TensorField | None
    field_error: str


def require_field(layer: LayerEntry) -> TensorField:
    """Patches need a receptive field; an untraceable op is a precondition failure."""
    if layer.field is None:
        raise failed_precondition(
            "RECEPTIVE_FIELD_UNAVAILABLE",
            layer.field_error or f"layer {layer.name!r} has no receptive field",
            layer=layer.name,
        )
    return layer.field


def check_channel(layer: LayerEntry, channel: int) -> None:
    """A channel (or a flat tensor's index) must exist in the layer."""
    channels = layer.shape[0] if layer.shape else 0
    if not 0 <= channel < channels:
        what = "index" if len(layer.shape) == 1 else "channel"
        raise invalid_argument(
            "CHANNEL_OUT_OF_RANGE",
            f"{what} {channel} is out of range for layer {layer.name!r}, which has {channels} "
            f"{'features' if what == 'index' else 'channels'} (valid: 0..{channels - 1})",
            layer=layer.name,
            channel=str(channel),
        )


@dataclass
class SizeView:
    """Everything about a model that depends on the input size, computed once."""

    input_size: tuple[int, int]
    shapes: dict[str, tuple[int, ...]]
    fields: ReceptiveFields
    layers: list[LayerEntry]  # with a row (shape (), field_error) for each unshaped tensor
    by_name: dict[str, LayerEntry]  # the shaped ones
    unshaped: tuple[str, ...] = ()  # tensors whose shape is unknown at this size
    shape_error: str = ""  # why (onnx shape inference / onnxruntime at this size)


@dataclass
class DefaultPreprocessing:
    """A model's default preprocessing: its sidecar, re-read when the file changes (a stat per
    request), else the ONNX metadata key, else nothing (then `source` is "")."""

    sidecar: Path
    metadata: str | None
    model_name: str
    _stamp: tuple[int, int] | None = None
    _value: Preprocessing = field(default_factory=Preprocessing)
    _source: str = ""
    _loaded: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> tuple[Preprocessing, str]:
        """(defaults, where they come from: "sidecar NAME", "metadata" or "")."""
        try:
            stat = self.sidecar.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if self._loaded and stamp == self._stamp:
                return self._value, self._source
            if stamp is not None:
                text = self.sidecar.read_text(encoding="utf-8")
                value = parse_json(text, f"sidecar {self.sidecar.name}")
                source = f"sidecar {self.sidecar.name}"
            elif self.metadata is not None:
                value = parse_json(self.metadata, f"model {self.model_name!r} metadata")
                source = f"metadata {PREPROCESS_METADATA_KEY}"
            else:
                value, source = Preprocessing(), ""
            if self._loaded:
                log.info(
                    "model %r: default preprocessing reloaded from %s",
                    self.model_name,
                    source or "built-in defaults",
                )
            self._value, self._source, self._stamp, self._loaded = value, source, stamp, True
            return value, source


@dataclass
class LoadedModel:
    name: str
    path: Path
    proto: onnx.ModelProto
    input: ImageInput
    defaults: DefaultPreprocessing
    device: str
    producers: dict[str, str]
    _views: BudgetedCache[SizeView] = field(
        default_factory=lambda: BudgetedCache("size_views", SIZE_VIEWS_MAX_BYTES)
    )
    sessions: SessionCache = field(default_factory=SessionCache)
    run_peaks: RunPeaks = field(default_factory=RunPeaks)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _multiple: LRUCache[str, int | None] = field(
        default_factory=lambda: LRUCache(maxsize=MAX_SIZE_MULTIPLES)
    )
    _warned: bool = False

    @property
    def default_preprocessing(self) -> Preprocessing:
        """The sidecar / metadata defaults as they are now (a changed sidecar is re-read)."""
        return self.defaults.current()[0]

    @property
    def defaults_source(self) -> str:
        """Where the defaults come from ("" when the model has neither sidecar nor metadata:
        it then runs on built-in defaults that may not be what it was trained with)."""
        return self.defaults.current()[1]

    def preprocessing_warning(self, request: Preprocessing) -> str:
        """One line when the model runs on built-in default normalisation (no sidecar, no
        metadata, nothing in the request): such results may not mean much (e.g. all top
        patches at one unit). Logged once per loaded model; returned for every request."""
        given = (request.scale, request.mean, request.std, request.channel_order)
        if self.defaults_source or any(value is not None for value in given):
            return ""
        warning = (
            f"model {self.name!r} has no {Path(self.name).name}{PREPROCESS_SIDECAR_SUFFIX} "
            f"sidecar and no {PREPROCESS_METADATA_KEY!r} metadata: it runs on built-in default "
            "preprocessing (scale 1/255, mean 0, std 1, rgb), which may not be what it was "
            "trained with"
        )
        if not self._warned:
            self._warned = True
            log.warning("%s", warning)
        return warning

    def resolve(self, request: Preprocessing) -> ResolvedPreprocessing:
        """The request over the model's defaults, checked against the model's input."""
        prep = resolve(
            self.default_preprocessing, request, self.input.fixed_size, self.input.layout
        )
        self._check_layout(prep)
        return prep

    def _check_layout(self, prep: ResolvedPreprocessing) -> None:
        """A layout that puts channels where the model declares a fixed other size would fail
        inside onnxruntime; say which layout the model takes instead."""
        height, width = prep.reference_size
        declared = self.input.shape[1:]
        channels = (declared[0] if self.input.layout == Layout.NCHW else declared[2]) or 3
        fed = (channels, height, width) if prep.layout == Layout.NCHW else (height, width, channels)
        if any(d is not None and d != f for d, f in zip(declared, fed, strict=True)):
            shown = ["N", *("?" if d is None else d for d in declared)]
            raise invalid_argument(
                "INVALID_LAYOUT",
                f"layout {prep.layout!r} feeds [N, {', '.join(map(str, fed))}] but model "
                f"{self.name!r} takes input {self.input.name!r} of shape "
                f"[{', '.join(map(str, shown))}] ({self.input.layout}): use --layout "
                f"{self.input.layout} (or drop --layout)",
            )

    def input_size(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        """The concrete size fields are computed for (order of precedence: docs/contracts.md)."""
        fixed = self.input.fixed_size
        if fixed is not None:
            if requested is not None and tuple(requested) != fixed:
                raise invalid_argument(
                    "INVALID_SIZE",
                    f"model {self.name!r} has a fixed input size {list(fixed)}; "
                    f"size {list(requested)} does not fit",
                )
            return fixed
        if requested is not None:
            if min(requested) <= 0:
                raise invalid_argument("INVALID_SIZE", f"size must be positive, got {requested}")
            return (int(requested[0]), int(requested[1]))
        defaults = self.default_preprocessing
        default = defaults.output_size()
        if default is not None:
            return default
        if defaults.resize_shorter is not None:  # per-image sizes: that of a square image
            return resolve(defaults, Preprocessing(), None, self.input.layout).reference_size
        raise invalid_argument(
            "INPUT_SIZE_REQUIRED",
            f"model {self.name!r} has a dynamic input height/width: give a size (--size H W), "
            f"e.g. `maxact layers {self.name} --size 224 224`",
        )

    def view(self, size: tuple[int, int]) -> SizeView:
        check_input_pixels(*size, what=f"input size of model {self.name!r}")
        cached = self._views.get(size)
        if cached is not None:
            return cached
        view = self._build_view(size)
        return self._views.put(size, view, view_cost(view))

    def _build_view(self, size: tuple[int, int]) -> SizeView:
        batch = self.input.fixed_batch or 1
        shape = (batch, 3, *size) if self.input.layout == Layout.NCHW else (batch, *size, 3)
        channels = self.input.shape[1] if self.input.layout == Layout.NCHW else self.input.shape[3]
        if channels is not None and channels != 3:
            shape = (
                (batch, channels, *size)
                if self.input.layout == Layout.NCHW
                else (batch, *size, channels)
            )
        try:
            shapes, shape_error = infer_shapes_reporting(self.proto, {self.input.name: shape})
        except Exception as exc:
            raise failed_precondition(
                "SHAPE_INFERENCE_FAILED",
                f"model {self.name!r}: cannot infer tensor shapes for input {list(shape)}: {exc}",
            ) from exc
        fields = compute_receptive_fields(
            self.proto, size, input_name=self.input.name, shapes=shapes
        )
        layers: list[LayerEntry] = []
        position = {out: i for i, node in enumerate(self.proto.graph.node) for out in node.output}
        failed = fields.failed()
        unshaped = tuple(
            out
            for node in self.proto.graph.node
            for out in node.output
            if out and out not in shapes
        )
        names = sorted(
            {*fields.tensors(), *failed, *unshaped}, key=lambda name: position.get(name, -1)
        )
        for tensor in names:
            if tensor in unshaped:
                reason = f"shape unknown at input {size[0]}x{size[1]}"
                layers.append(LayerEntry(tensor, self.producers.get(tensor, ""), (), None, reason))
                continue
            try:
                tensor_field: TensorField | None = fields.field(tensor)
                error = ""
            except FieldError as exc:
                tensor_field, error = None, str(exc)
            full_shape = shapes.get(tensor)
            if full_shape is None:
                continue
            if tensor_field is not None:
                layer_shape: tuple[int, ...] = (
                    (tensor_field.channels, tensor_field.height, tensor_field.width)
                    if tensor_field.spatial
                    else (tensor_field.channels,)
                )
            else:
                layer_shape = tuple(full_shape[1:])
            layers.append(
                LayerEntry(tensor, self.producers.get(tensor, ""), layer_shape, tensor_field, error)
            )
        shaped = {layer.name: layer for layer in layers if layer.name not in unshaped}
        return SizeView(size, shapes, fields, layers, shaped, unshaped, shape_error)

    def _created(self, create: Callable[[], ort.InferenceSession]) -> ort.InferenceSession:
        """A new session; onnxruntime refusing the graph is the model's fault, said as such."""
        try:
            return create()
        except ServiceError:
            raise
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[-1][:200]
            raise failed_precondition(
                "MODEL_INVALID",
                f"model {self.name!r}: onnxruntime cannot run it ({type(exc).__name__}: "
                f"{first_line})",
                model=self.name,
            ) from None

    def layer(self, size: tuple[int, int], name: str) -> LayerEntry:
        """The catalogue row of `name` at `size`; when there is none, an error that names the
        real cause (the size, a misspelt name) and a command that works."""
        view = self.view(size)
        entry = view.by_name.get(name)
        if entry is not None:
            return entry
        if name in view.unshaped:
            raise self.size_error(size, view, name)
        close = difflib.get_close_matches(name, [*view.by_name, *view.unshaped], n=3, cutoff=0.6)
        suggestion = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise invalid_argument(
            "LAYER_NOT_FOUND",
            f"model {self.name!r} has no layer {name!r}; {suggestion}(a layer is an ONNX tensor "
            f"name, exactly as in the graph; `{self.layers_command(size)}` lists them)",
            layer=name,
        )

    def layers_command(self, size: tuple[int, int]) -> str:
        """A `maxact layers` command that works for this model (with --size when it has a
        dynamic input height/width)."""
        if self.input.fixed_size is not None:
            return f"maxact layers {self.name}"
        return f"maxact layers {self.name} --size {size[0]} {size[1]}"

    def size_error(self, size: tuple[int, int], view: SizeView, name: str) -> Exception:
        """INVALID_ARGUMENT for a size the model cannot take, suggesting the side multiple it
        evidently wants (found by trying sizes rounded to multiples)."""
        multiple = self.size_multiple(size)
        if multiple is not None:
            fix = (
                f"the model evidently wants sides that are multiples of {multiple}: use "
                f"--resize-shorter S --size-multiple {multiple}, or a --size whose sides are "
                f"multiples of {multiple}"
            )
        else:
            fix = "try another input size"
        return invalid_argument(
            "INPUT_SIZE_UNSUPPORTED",
            f"model {self.name!r} cannot take an input of {size[0]}x{size[1]}: the shapes of "
            f"{len(view.unshaped)} tensors (among them {name!r}) cannot be inferred at that "
            f"size ({_shorten(view.shape_error)}); {fix}",
            layer=name,
            size=f"{size[0]}x{size[1]}",
        )

    def size_multiple(self, size: tuple[int, int]) -> int | None:
        """The smallest side multiple M the model takes near `size`, or None (cached per
        size). M is tried at ODD multiples of M, so a model that wants 32 is not reported as
        wanting 8 just because 96 (a multiple of 8, and of 32) works."""
        key = f"{size[0]}x{size[1]}"
        with self._lock:
            if key in self._multiple:
                return self._multiple[key]
        found = None
        for multiple in SIZE_MULTIPLES:
            near = (_odd_multiple(size[0], multiple), _odd_multiple(size[1], multiple))
            if near != size and not self.view(near).unshaped:
                found = multiple
                break
        with self._lock:
            self._multiple[key] = found
        return found

    def session(
        self, outputs: tuple[str, ...], size: tuple[int, int] | None = None
    ) -> ort.InferenceSession:
        """A session on the graph pruned to `outputs`, from the server-wide LRU (`size`: the
        input size it is about to run at, for the estimate of what a new one costs)."""
        key = (self.name, "outputs", tuple(sorted(outputs)))
        found = self.sessions.get(key)
        if found is not None:
            return found
        pruned = prune_to_outputs(self.proto, key[2])

        def create() -> tuple[ort.InferenceSession, int]:
            return self._created(lambda: create_session(pruned, self.device)), pruned.ByteSize()

        return self.sessions.get_or_create(key, create, self._size_bytes(pruned, size))

    def _size_bytes(self, pruned: onnx.ModelProto, size: tuple[int, int] | None) -> int:
        """What a session on `pruned` holds per `session_cost.pruned_size_bytes`."""
        return pruned_size_bytes(pruned, self.view(size).shapes if size is not None else {})

    def scan_session(
        self,
        outputs: tuple[str, ...],
        size: tuple[int, int],
        reductions: tuple[LayerReduction, ...] = (),
        feed: Uint8Feed | None = None,
    ) -> tuple[ort.InferenceSession, int | None]:
        """(session, largest batch or None for any) for scanning `outputs`.

        With `reductions` the pruned graph ends in them (`graph.reductions`) and its outputs are
        theirs, in order; with `feed` the input is uint8 pixels normalised in the graph. A
        model exported with a fixed batch of 1 gets a batch-symbolic graph when a one-time
        check shows it batches correctly, else it runs one image at a time.
        """
        fixed = self.input.fixed_batch
        if fixed != 1 and not reductions and feed is None:
            return self.session(outputs, size), fixed
        # not the size nor the channel / unit values: one session per layer set serves every
        # input size and channel (a session per size or channel subset grew the server until
        # it was OOM-killed); `size` only shapes the one-time batching check
        key = (*sorted(outputs), tuple(r.graph_key for r in reductions), feed)

        def reduced(proto: onnx.ModelProto) -> onnx.ModelProto:
            if feed is not None:
                proto = with_uint8_input(proto, self.input.name, feed)
            return with_reductions(proto, reductions) if reductions else proto

        found = self.sessions.get((self.name, "scan", key))
        if found is not None:
            return found  # type: ignore[no-any-return]
        pruned = prune_to_outputs(self.proto, tuple(sorted(outputs)))

        def create() -> tuple[tuple[ort.InferenceSession, int | None], int]:
            from maxact.server.models.batching import batchable_session

            if fixed != 1:
                final = reduced(pruned)
                made = self._created(lambda: create_session(final, self.device))
                return (made, fixed), final.ByteSize()
            names = tuple(o for r in reductions for o in r.outputs) or tuple(sorted(outputs))
            session = batchable_session(
                self.proto,
                self.input,
                tuple(sorted(outputs)),
                size,
                lambda proto: self._created(lambda: create_session(reduced(proto), self.device)),
                names,
                feeds_of(reductions),
            )
            found: tuple[ort.InferenceSession, int | None] = (
                (session, None)
                if session is not None
                else (self._created(lambda: create_session(reduced(pruned), self.device)), 1)
            )
            return found, self.proto.ByteSize()

        session: tuple[Any, int | None] = self.sessions.get_or_create(
            (self.name, "scan", key), create, self._size_bytes(pruned, size)
        )
        return session


class ModelRegistry:
    """Models under one root, loaded on first use and kept until unloaded."""

    def __init__(
        self, model_root: Path, device: str = "auto", session_cache_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.model_root = model_root
        self.device = device
        self.sessions = SessionCache(session_cache_bytes)
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def names(self) -> list[tuple[str, int]]:
        """(name, size in bytes) of every .onnx file under the root."""
        found = []
        root = self.model_root.resolve()
        for path in root.rglob(f"*{MODEL_SUFFIX}"):
            if (
                path.is_file()
                and is_inside(root, path)
                and not any(part.startswith(".") for part in path.relative_to(root).parts)
            ):
                found.append(
                    (path.relative_to(root).with_suffix("").as_posix(), path.stat().st_size)
                )
        return sorted(found)

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._loaded

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            model = self._loaded.get(name)
            if model is not None:
                return model
            lock = self._loading.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._loaded:
                    return self._loaded[name]
            model = self._load(name)
            with self._lock:
                self._loaded[name] = model
            return model

    def unload(self, name: str) -> bool:
        with self._lock:
            found = self._loaded.pop(name, None) is not None
        self.sessions.evict(lambda key: key[0] == name)  # type: ignore[index]
        release_free_memory()  # what onnxruntime freed: back to the system now
        return found

    def path_of(self, name: str) -> Path:
        check_name(name, "model")
        path = resolve_under(self.model_root, name + MODEL_SUFFIX, "model")
        if not path.is_file():
            known = [n for n, _ in self.names()][:10]
            raise not_found(
                "MODEL_NOT_FOUND",
                f"model {shown(name)} not found under the model root (known: {known})",
                model=name,
            )
        return path

    def _load(self, name: str) -> LoadedModel:
        path = self.path_of(name)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except (DecodeError, RuntimeError, ValueError, OSError) as exc:
            raise failed_precondition(
                "MODEL_INVALID",
                f"model {name!r}: {path.name} is not a readable ONNX model: {exc}",
                model=name,
            ) from exc
        if not proto.graph.node:
            raise failed_precondition(
                "MODEL_INVALID",
                f"model {name!r}: {path.name} is not an ONNX model (no graph nodes)",
                model=name,
            )
        garbled = text_problem(proto)
        if garbled is not None:
            raise failed_precondition("MODEL_INVALID", f"model {name!r}: {garbled}", model=name)
        _load_external_data(proto, path.parent, name)
        try:
            model_input = image_input(proto)
        except ValueError as exc:
            raise failed_precondition(
                "MODEL_INVALID", f"model {name!r}: {exc}", model=name
            ) from exc
        reason = unsupported_input(proto, model_input)
        damaged = tensor_problem(_all_tensors(proto))
        if damaged is not None:
            raise failed_precondition("MODEL_INVALID", f"model {name!r}: {damaged}", model=name)
        if reason is not None:
            raise failed_precondition(
                "MODEL_UNSUPPORTED", f"model {name!r} cannot be scanned: {reason}", model=name
            )
        producers = {out: node.op_type for node in proto.graph.node for out in node.output}
        return LoadedModel(
            name=name,
            path=path,
            proto=proto,
            input=model_input,
            defaults=_default_preprocessing(proto, path, name),
            device=self.device,
            producers=producers,
            sessions=self.sessions,
        )


def _load_external_data(proto: onnx.ModelProto, folder: Path, name: str) -> None:
    """Load external tensor data, refusing locations outside the model's folder."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    external = [t for t in _all_tensors(proto) if uses_external_data(t)]
    for tensor in external:
        location = ExternalDataInfo(tensor).location
        target = (folder / location).resolve()
        if not is_inside(folder, target):
            raise failed_precondition(
                "MODEL_INVALID",
                f"model {name!r}: external data {location!r} lies outside the model's folder",
                model=name,
            )
    problem = external_data_problem(external, folder)
    if problem is not None:
        raise failed_precondition("MODEL_INVALID", f"model {name!r}: {problem}", model=name)
    if external:
        try:
            onnx.load_external_data_for_model(proto, str(folder))
        except (OSError, ValueError) as exc:
            raise failed_precondition(
                "MODEL_INVALID",
                f"model {name!r}: its external data cannot be read ({type(exc).__name__})",
                model=name,
            ) from None


def _all_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                tensors.append(attribute.t)
    return tensors


def _default_preprocessing(proto: onnx.ModelProto, path: Path, name: str) -> DefaultPreprocessing:
    """Sidecar NAME.preprocess.json wins over the metadata key; neither: empty. Parsed now, so
    a broken sidecar fails the load with a message naming it."""
    sidecar = path.with_name(path.name[: -len(MODEL_SUFFIX)] + PREPROCESS_SIDECAR_SUFFIX)
    metadata = next(
        (prop.value for prop in proto.metadata_props if prop.key == PREPROCESS_METADATA_KEY), None
    )
    defaults = DefaultPreprocessing(sidecar, metadata, name)
    defaults.current()
    return defaults


def view_cost(view: SizeView) -> int:
    """The bytes a SizeView is charged: VIEW_COST_FACTOR x its pickled size (an upper
    estimate of the objects it holds; see SIZE_VIEWS_MAX_BYTES)."""
    try:
        return VIEW_COST_FACTOR * len(pickle.dumps(view, protocol=pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError):
        return 24 * 1024 * max(1, len(view.layers))  # PP-OCRv4 det: 23 KB per row


def _odd_multiple(side: int, multiple: int) -> int:
    """The odd multiple of `multiple` nearest to `side` (at least `multiple`)."""
    quotient = max(1, round(side / multiple))
    if quotient % 2 == 0:
        quotient += 1 if side / multiple >= quotient else -1
    return max(1, quotient) * multiple


def _shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
