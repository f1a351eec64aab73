"""The maxact Python client: typed results over the maxact gRPC API, and the `maxact` CLI."""

from maxact.client.client import DEFAULT_SERVER, Client
from maxact.client.errors import MaxactError
from maxact.client.images import collect_images
from maxact.client.stream import TopKStream
from maxact.client.types import (
    ChannelGroup,
    DatasetSummary,
    Done,
    FieldGeometry,
    FieldInfo,
    Hit,
    ImageSkipped,
    LayerInfo,
    ModelInfo,
    ModelSummary,
    PartialTopK,
    Patch,
    Progress,
    ReceptiveField,
    TensorInfo,
    TopKEvent,
    TopKResult,
)
from maxact.common.preprocessing import Preprocessing

__all__ = [
    "DEFAULT_SERVER",
    "ChannelGroup",
    "Client",
    "DatasetSummary",
    "Done",
    "FieldGeometry",
    "FieldInfo",
    "Hit",
    "ImageSkipped",
    "LayerInfo",
    "MaxactError",
    "ModelInfo",
    "ModelSummary",
    "PartialTopK",
    "Patch",
    "Preprocessing",
    "Progress",
    "ReceptiveField",
    "TensorInfo",
    "TopKEvent",
    "TopKResult",
    "TopKStream",
    "collect_images",
]
