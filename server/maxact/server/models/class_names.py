"""The class names of a model's flat output (logits): sidecar NAME.labels.txt (one name per
line) or the ONNX metadata key `maxact.labels` (a JSON list of strings); the sidecar wins.

Without them a logits neuron is only "channel 281"; with them outputs can say "tabby cat".
"""

from __future__ import annotations

import json

import onnx

from maxact.server.errors import failed_precondition
from maxact.server.models.registry import MODEL_SUFFIX, LoadedModel

LABELS_SIDECAR_SUFFIX = ".labels.txt"
LABELS_METADATA_KEY = "maxact.labels"


def flat_output(proto: onnx.ModelProto) -> str:
    """The graph output the names belong to: the first of rank 2 ([N, classes]), else the
    first output."""
    outputs = list(proto.graph.output)
    for output in outputs:
        if len(output.type.tensor_type.shape.dim) == 2:
            return output.name
    return outputs[0].name if outputs else ""


def _from_metadata(model: LoadedModel) -> list[str] | None:
    for prop in model.proto.metadata_props:
        if prop.key != LABELS_METADATA_KEY:
            continue
        try:
            names = json.loads(prop.value)
        except json.JSONDecodeError as exc:
            names = exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise failed_precondition(
                "MODEL_LABELS_INVALID",
                f"model {model.name!r}: metadata {LABELS_METADATA_KEY!r} must be a JSON list "
                "of strings",
                model=model.name,
            )
        return names
    return None


def class_names(model: LoadedModel) -> tuple[str, list[str]]:
    """(the flat output tensor, its channels' names); ("", []) when the model names none."""
    sidecar = model.path.with_name(model.path.name[: -len(MODEL_SUFFIX)] + LABELS_SIDECAR_SUFFIX)
    names: list[str] | None = None
    if sidecar.is_file():
        lines = sidecar.read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        names = [line.strip() for line in lines]
    else:
        names = _from_metadata(model)
    if not names:
        return "", []
    return flat_output(model.proto), names
