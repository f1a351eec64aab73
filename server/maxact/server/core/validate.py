"""Shared request validation: model, size, layer, channel, unit — each failure names the culprit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from maxact.server.data.datasets import DatasetCatalog
from maxact.server.errors import invalid_argument
from maxact.server.models.registry import (  # check_channel: re-exported for the servicers
    LayerEntry,
    LoadedModel,
    ModelRegistry,
    check_channel,
    require_field,
)


@dataclass
class ServerState:
    """What every servicer shares."""

    models: ModelRegistry
    datasets: DatasetCatalog


def size_from(values: list[int]) -> tuple[int, int] | None:
    if not values:
        return None
    if len(values) != 2 or min(values) <= 0:
        raise invalid_argument("INVALID_SIZE", f"size must be two positive integers, got {values}")
    return int(values[0]), int(values[1])


async def load_model(state: ServerState, name: str) -> LoadedModel:
    if not name:
        raise invalid_argument("MODEL_REQUIRED", "no model name given")
    return await asyncio.to_thread(state.models.get, name)


async def find_layer(model: LoadedModel, size: tuple[int, int], name: str) -> LayerEntry:
    if not name:
        raise invalid_argument("LAYER_REQUIRED", "no layer name given")
    return await asyncio.to_thread(model.layer, size, name)


def check_unit(layer: LayerEntry, unit: tuple[int, int]) -> None:
    if len(layer.shape) != 3:
        raise invalid_argument(
            "UNIT_NOT_SPATIAL", f"layer {layer.name!r} is flat: it has no (y, x) units"
        )
    _, height, width = layer.shape
    y, x = unit
    if not (0 <= y < height and 0 <= x < width):
        raise invalid_argument(
            "UNIT_OUT_OF_RANGE",
            f"unit ({y}, {x}) is outside layer {layer.name!r}'s {height}x{width} grid",
            layer=layer.name,
        )


__all__ = [
    "ServerState",
    "check_channel",
    "check_unit",
    "find_layer",
    "load_model",
    "require_field",
    "size_from",
]
