"""Analytic receptive fields of ONNX CNNs (DESIGN.md §3), exact per unit."""

from .engine import ReceptiveFields, compute_receptive_fields
from .errors import FieldError
from .fields import AxisGeometry, ChannelGroupField, TensorField

__all__ = [
    "AxisGeometry",
    "ChannelGroupField",
    "FieldError",
    "ReceptiveFields",
    "TensorField",
    "compute_receptive_fields",
]
