"""The one error type of the receptive-field engine."""

from __future__ import annotations


class FieldError(Exception):
    """A tensor's receptive field cannot be derived (unsupported op, unaligned paths, ...).

    Raised lazily, for the tensors that depend on the offending node only, so the rest of a model
    stays usable. `op` is the op type that blocks the derivation, `tensor` the tensor asked for.
    """

    def __init__(self, message: str, op: str, tensor: str) -> None:
        super().__init__(message)
        self.op = op
        self.tensor = tensor
