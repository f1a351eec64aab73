"""The start-a-scan form of the home page: the model's layers and its preprocessing fields
prefilled from the sidecar defaults, and the form's values back into a core request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from maxact.common.kinds import TopKMode
from maxact.common.preprocessing import Preprocessing
from maxact.server.core.scans import NewScanRequest
from maxact.server.errors import ServiceError, invalid_argument
from maxact.server.http.ui.services import UiServices
from maxact.server.http.ui.views import LayerView, layer_view

# the request's preprocessing fields, in the order the form shows them, with a hint each
HINTS = {
    "size": "H W",
    "resize_shorter": "S",
    "center_crop": "H W",
    "letterbox": "H W",
    "size_multiple": "M",
    "pad_value": "0..255",
    "scale": "e.g. 0.00392",
    "mean": "A B C",
    "std": "A B C",
    "channel_order": "rgb | bgr",
    "layout": "nchw | nhwc",
}
LISTS = {"size", "center_crop", "letterbox", "mean", "std"}
INTEGERS = {"size", "center_crop", "letterbox", "resize_shorter", "size_multiple"}
WORDS = {"channel_order", "layout"}
MAX_LAYERS_CHECKED = 2  # the default choice: the deepest spatial layers


@dataclass(frozen=True)
class PrepField:
    name: str
    value: str
    hint: str


@dataclass(frozen=True)
class ScanForm:
    model: str
    layers: list[LayerView] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    preprocessing: list[PrepField] = field(default_factory=list)
    source: str = ""
    error: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return " ".join(_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(getattr(value, "value", value))


async def scan_form(ui: UiServices, model: str) -> ScanForm:
    """The form for `model` ("" : no model); a model that cannot be read says why."""
    if not model:
        return ScanForm(model="")
    try:
        described = await ui.models.describe(model, [])
        loaded = ui.state.models.get(model)
    except ServiceError as error:
        return ScanForm(model=model, error=f"{error.reason}: {error.message}")
    defaults = described.default_preprocessing
    layers = [layer_view(entry) for entry in described.layers]
    spatial = [v for v in layers if len(v.shape) == 3]
    return ScanForm(
        model=model,
        layers=layers,
        checked={v.name for v in spatial[-MAX_LAYERS_CHECKED:]},
        preprocessing=[
            PrepField(name, _text(getattr(defaults, name)), hint) for name, hint in HINTS.items()
        ],
        source=loaded.defaults_source,
    )


def _value(name: str, text: str) -> Any:
    if name in WORDS:
        return text
    numbers = text.replace(",", " ").split()
    parse = int if name in INTEGERS else float
    try:
        values = [parse(n) for n in numbers]
    except ValueError:
        raise invalid_argument(
            "INVALID_PREPROCESSING", f"{name}: {text[:50]!r} is not a number list"
        ) from None
    if name in LISTS:
        return values
    if len(values) != 1:
        raise invalid_argument("INVALID_PREPROCESSING", f"{name} takes one number, got {text!r}")
    return values[0]


def scan_request(form: dict[str, Any], layers: list[str]) -> NewScanRequest:
    """A NewScanRequest from the posted form; bad values raise INVALID_ARGUMENT naming them."""
    known = {f.name for f in fields(Preprocessing)}
    prep = {
        name: _value(name, str(form[name]).strip())
        for name in HINTS
        if name in known and str(form.get(name, "")).strip()
    }
    try:
        preprocessing = Preprocessing.from_dict(prep)
    except ValueError as exc:
        raise invalid_argument("INVALID_PREPROCESSING", str(exc)) from None
    if not layers:
        raise invalid_argument("LAYER_REQUIRED", "choose at least one layer to scan")
    try:
        k = int(str(form.get("k") or 0))
        mode = TopKMode(str(form.get("mode") or "image"))
    except ValueError:
        raise invalid_argument(
            "INVALID_ARGUMENT", "k must be a whole number and mode image or position"
        ) from None
    return NewScanRequest(
        model=str(form.get("model", "")),
        layers=layers,
        dataset=str(form.get("dataset", "")),
        k=k,
        mode=mode,
        preprocessing=preprocessing,
        request_id=str(form.get("request_id", ""))[:100],
    )
