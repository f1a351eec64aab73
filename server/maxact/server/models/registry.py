"""The model registry: find models under the root, load them safely, and cache what they need.

A loaded model keeps, per concrete input size, its tensor shapes, receptive fields and layer
catalogue (computed once), and one onnxruntime session per set of exposed tensors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from maxact.server.data.preprocess import Preprocessing
from maxact.server.errors import failed_precondition, invalid_argument, not_found
from maxact.server.models.graph import ImageInput, image_input, prune_to_outputs
from maxact.server.models.runtime import create_session
from maxact.server.models.sessions import DEFAULT_MAX_BYTES, SessionCache
from maxact.server.models.shapes import infer_shapes
from maxact.server.paths import is_inside, resolve_under
from maxact.server.rf import FieldError, ReceptiveFields, TensorField, compute_receptive_fields
from maxact.server.scan.ingraph import (
    LayerReduction,
    Uint8Feed,
    with_reductions,
    with_uint8_input,
)

MODEL_SUFFIX = ".onnx"
PREPROCESS_SIDECAR_SUFFIX = ".preprocess.json"
PREPROCESS_METADATA_KEY = "maxact.preprocess"


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


@dataclass
class SizeView:
    """Everything about a model that depends on the input size, computed once."""

    input_size: tuple[int, int]
    shapes: dict[str, tuple[int, ...]]
    fields: ReceptiveFields
    layers: list[LayerEntry]
    by_name: dict[str, LayerEntry]


@dataclass
class LoadedModel:
    name: str
    path: Path
    proto: onnx.ModelProto
    input: ImageInput
    default_preprocessing: Preprocessing
    device: str
    producers: dict[str, str]
    _views: dict[tuple[int, int], SizeView] = field(default_factory=dict)
    sessions: SessionCache = field(default_factory=SessionCache)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def input_size(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        """The concrete size fields are computed for (DESIGN §3 order of precedence)."""
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
        default = self.default_preprocessing.output_size()
        if default is not None:
            return default
        raise invalid_argument(
            "INPUT_SIZE_REQUIRED",
            f"model {self.name!r} has a dynamic input height/width: give a size (--size H W)",
        )

    def view(self, size: tuple[int, int]) -> SizeView:
        with self._lock:
            cached = self._views.get(size)
        if cached is not None:
            return cached
        view = self._build_view(size)
        with self._lock:
            self._views.setdefault(size, view)
            return self._views[size]

    def _build_view(self, size: tuple[int, int]) -> SizeView:
        batch = self.input.fixed_batch or 1
        shape = (batch, 3, *size) if self.input.layout == "nchw" else (batch, *size, 3)
        channels = self.input.shape[1] if self.input.layout == "nchw" else self.input.shape[3]
        if channels is not None and channels != 3:
            shape = (
                (batch, channels, *size)
                if self.input.layout == "nchw"
                else (batch, *size, channels)
            )
        try:
            shapes = infer_shapes(self.proto, {self.input.name: shape})
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
        names = sorted([*fields.tensors(), *failed], key=lambda name: position.get(name, -1))
        for tensor in names:
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
        return SizeView(size, shapes, fields, layers, {layer.name: layer for layer in layers})

    def layer(self, size: tuple[int, int], name: str) -> LayerEntry:
        view = self.view(size)
        entry = view.by_name.get(name)
        if entry is None:
            hint = ", ".join(layer.name for layer in view.layers[:8])
            raise invalid_argument(
                "LAYER_NOT_FOUND",
                f"model {self.name!r} has no layer {name!r} (a layer is an ONNX tensor name with "
                f"a spatial or flat shape; e.g. {hint} ...; `maxact layers {self.name}` lists all)",
                layer=name,
            )
        return entry

    def session(self, outputs: tuple[str, ...]) -> ort.InferenceSession:
        """A session on the graph pruned to `outputs`, from the server-wide LRU."""
        key = tuple(sorted(outputs))

        def create() -> tuple[ort.InferenceSession, int]:
            pruned = prune_to_outputs(self.proto, key)
            return create_session(pruned, self.device), pruned.ByteSize()

        return self.sessions.get_or_create((self.name, "outputs", key), create)

    def scan_session(
        self,
        outputs: tuple[str, ...],
        size: tuple[int, int],
        reductions: tuple[LayerReduction, ...] = (),
        feed: Uint8Feed | None = None,
    ) -> tuple[ort.InferenceSession, int | None]:
        """(session, largest batch or None for any) for scanning `outputs`.

        With `reductions` the pruned graph ends in them (`scan.ingraph`) and its outputs are
        theirs, in order; with `feed` the input is uint8 pixels normalised in the graph. A
        model exported with a fixed batch of 1 gets a batch-symbolic graph when a one-time
        check shows it batches correctly, else it runs one image at a time.
        """
        fixed = self.input.fixed_batch
        if fixed != 1 and not reductions and feed is None:
            return self.session(outputs), fixed
        key = (*sorted(outputs), f"{size[0]}x{size[1]}", reductions, feed)

        def reduced(proto: onnx.ModelProto) -> onnx.ModelProto:
            if feed is not None:
                proto = with_uint8_input(proto, self.input.name, feed)
            return with_reductions(proto, reductions) if reductions else proto

        def create() -> tuple[tuple[ort.InferenceSession, int | None], int]:
            from maxact.server.models.batching import batchable_session

            pruned = prune_to_outputs(self.proto, tuple(sorted(outputs)))
            if fixed != 1:
                final = reduced(pruned)
                return (create_session(final, self.device), fixed), final.ByteSize()
            names = tuple(o for r in reductions for o in r.outputs) or tuple(sorted(outputs))
            session = batchable_session(
                self.proto,
                self.input,
                tuple(sorted(outputs)),
                size,
                lambda proto: create_session(reduced(proto), self.device),
                names,
            )
            found: tuple[ort.InferenceSession, int | None] = (
                (session, None)
                if session is not None
                else (create_session(reduced(pruned), self.device), 1)
            )
            return found, self.proto.ByteSize()

        return self.sessions.get_or_create((self.name, "scan", key), create)


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
        return found

    def path_of(self, name: str) -> Path:
        path = resolve_under(self.model_root, name + MODEL_SUFFIX, "model")
        if not path.is_file():
            known = [n for n, _ in self.names()][:10]
            raise not_found(
                "MODEL_NOT_FOUND",
                f"model {name!r} not found under the model root (known: {known})",
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
        _load_external_data(proto, path.parent, name)
        try:
            model_input = image_input(proto)
        except ValueError as exc:
            raise failed_precondition(
                "MODEL_INVALID", f"model {name!r}: {exc}", model=name
            ) from exc
        producers = {out: node.op_type for node in proto.graph.node for out in node.output}
        return LoadedModel(
            name=name,
            path=path,
            proto=proto,
            input=model_input,
            default_preprocessing=_default_preprocessing(proto, path, name),
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
    if external:
        onnx.load_external_data_for_model(proto, str(folder))


def _all_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                tensors.append(attribute.t)
    return tensors


def _default_preprocessing(proto: onnx.ModelProto, path: Path, name: str) -> Preprocessing:
    """Sidecar NAME.preprocess.json wins over the metadata key; neither: empty."""
    sidecar = path.with_name(path.name[: -len(MODEL_SUFFIX)] + PREPROCESS_SIDECAR_SUFFIX)
    if sidecar.is_file():
        return Preprocessing.from_json(sidecar.read_text(encoding="utf-8"), str(sidecar.name))
    for prop in proto.metadata_props:
        if prop.key == PREPROCESS_METADATA_KEY:
            return Preprocessing.from_json(prop.value, f"model {name!r} metadata")
    return Preprocessing()
