"""Analytic receptive fields of ONNX CNNs, exact per unit (docs/contracts.md, "Receptive fields").

`compute_receptive_fields(model, (H, W))` walks the graph once in topological order and keeps,
per tensor, channel groups whose fields are tracked per axis in two forms:

- exact intervals: for every output row (column) the half-open range of input rows (columns)
  that can reach it, propagated tap by tap and clipped at every layer, so padding never counts
  and border units are exact (reflect/edge padding reads real pixels and is followed);
- the R/S/P geometry (Araujo et al. 2019), exact rationals: unit i covers
  `[i*S - P, i*S - P + R)`. After fractional-stride ops (Resize, strided ConvTranspose,
  DepthToSpace) the geometry is the tightest affine envelope of the exact boxes and
  `AxisGeometry.exact` is False.

Where paths meet (Add, Mul, Sum, ...) the field is the union: with equal strides and any
centres the hull `P = max P_i`, `R = max(R_i - P_i) + P`; with different strides a
`FieldError` names the op. Inputs broadcast over space (squeeze-excitation gates, flat
tensors) keep the local field and set `global_context`. Global paths (GlobalAveragePool,
Gemm, Flatten, spatial reductions) give flat tensors whose field is the whole image.
Tensors of tokens that came from a grid (a vision transformer's patches) keep that grid:
`TensorField.tokens` says where the tokens are, and the field describes the grid tokens
(prefix tokens such as CLS excluded); ops that mix tokens set `global_context`.
Unsupported ops fail lazily: only the tensors depending on them raise `FieldError`.
"""

from maxact.server.rf.engine import ReceptiveFields, compute_receptive_fields
from maxact.server.rf.errors import FieldError
from maxact.server.rf.fields import AxisGeometry, ChannelGroupField, TensorField, TokenGrid

__all__ = [
    "AxisGeometry",
    "ChannelGroupField",
    "FieldError",
    "ReceptiveFields",
    "TensorField",
    "TokenGrid",
    "compute_receptive_fields",
]
