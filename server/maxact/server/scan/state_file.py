"""Reducer states as .npz bytes, read back only when every array is the size the scan allows.

A checkpoint comes from the store, which is not trusted: a deflated member can announce (and
inflate to) gigabytes in a few kilobytes. Each member's .npy header is read from the zip
stream first (a few hundred bytes inflated) and checked against the arrays the reducer
itself would write; only then are the arrays inflated, and each is exactly its header's size.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping

import numpy as np
from numpy.lib import format as npy

from maxact.server.compile_lock import COMPILE_LOCK

# plain numbers only (never objects); at most 8 bytes each
_KINDS = "biuf"
_MAX_ITEM_BYTES = 8


def write_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """`arrays` as an .npz file."""
    buffer = io.BytesIO()
    # numpy's stub types **arrays as if one of them could be `allow_pickle` (a bool)
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _header(archive: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    with COMPILE_LOCK, archive.open(member) as stream:  # parsed with ast: see compile_lock
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = npy.read_array_header_2_0(stream)
        else:
            raise ValueError(f"{member}: unsupported .npy version {version}")
    return tuple(shape), np.dtype(dtype)


def read_arrays(data: bytes, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The arrays of the .npz `data`, which must hold exactly the names of `shapes`, each of
    that shape and of a plain number type; raises ValueError (naming the array) otherwise,
    before anything is inflated."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = set(archive.namelist())
            wanted = {f"{name}.npy" for name in shapes}
            if members != wanted:
                raise ValueError(
                    f"holds arrays {sorted(m.removesuffix('.npy') for m in members)},"
                    f" expected {sorted(shapes)}"
                )
            for name, shape in shapes.items():
                found, dtype = _header(archive, f"{name}.npy")
                if found != shape:
                    raise ValueError(f"array {name!r} has shape {found}, expected {shape}")
                if dtype.kind not in _KINDS or dtype.itemsize > _MAX_ITEM_BYTES:
                    raise ValueError(f"array {name!r} has type {dtype}, expected a number")
        with COMPILE_LOCK, np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return {name: arrays[name] for name in shapes}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"not a readable .npz file: {exc}") from None
