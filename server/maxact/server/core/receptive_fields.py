"""A layer's receptive field at an input size, and the exact box of one of its units."""

from __future__ import annotations

from dataclasses import dataclass

from maxact.server.core.validate import (
    ServerState,
    check_unit,
    find_layer,
    load_model,
    require_field,
    size_from,
)
from maxact.server.errors import invalid_argument
from maxact.server.rf import TensorField

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class FieldAnswer:
    """`box` (clipped to the input) and `box_unclipped` (rounded outwards) are the asked
    unit's, None when no unit was asked."""

    model: str
    layer: str
    input_name: str
    input_size: tuple[int, int]
    shape: tuple[int, ...]
    field: TensorField
    box: Box | None = None
    box_unclipped: Box | None = None


async def receptive_field(
    state: ServerState,
    model_name: str,
    layer_name: str,
    size: list[int],
    unit: tuple[int, int] | None,
) -> FieldAnswer:
    """`size` [] means the model's own input size."""
    model = await load_model(state, model_name)
    input_size = model.input_size(size_from(size))
    layer = await find_layer(model, input_size, layer_name)
    require_field(layer)
    assert layer.field is not None
    answer = FieldAnswer(
        model.name, layer.name, model.input.name, input_size, tuple(layer.shape), layer.field
    )
    if unit is None:
        return answer
    if not layer.field.spatial:
        raise invalid_argument(
            "UNIT_NOT_SPATIAL", f"layer {layer.name!r} is flat: it has no (y, x) units"
        )
    check_unit(layer, unit)
    y0, x0, y1, x1 = layer.field.box_unclipped(*unit)
    return FieldAnswer(
        answer.model,
        answer.layer,
        answer.input_name,
        input_size,
        answer.shape,
        answer.field,
        box=layer.field.box(*unit),
        box_unclipped=(int(y0 // 1), int(x0 // 1), -int(-y1 // 1), -int(-x1 // 1)),
    )
