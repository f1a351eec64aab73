"""The request stream of a model upload: checksum first, then the file in chunks.

The file is read twice (hash, then send) instead of being held in memory: a 2 GB model must
not need 2 GB of client RAM. If the file changes in between, the server's checksum check
refuses the upload, which is the right outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from maxact.common.preprocessing import Preprocessing
from maxact.v1 import model_service_pb2

DEFAULT_CHUNK_BYTES = 1024 * 1024


def file_sha256(path: Path, chunk_size: int = DEFAULT_CHUNK_BYTES) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def upload_requests(
    path: Path,
    name: str,
    *,
    sha256: str,
    overwrite: bool = False,
    preprocessing: Preprocessing | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[model_service_pb2.UploadModelRequest]:
    """The header names the model and carries the checksum and options, no data; then one
    message per chunk."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    header = model_service_pb2.UploadModelHeader(name=name, sha256=sha256, overwrite=overwrite)
    if preprocessing is not None:
        header.preprocessing.CopyFrom(preprocessing.to_proto())
    yield model_service_pb2.UploadModelRequest(header=header)
    with path.open("rb") as handle:
        while block := handle.read(chunk_size):
            yield model_service_pb2.UploadModelRequest(chunk=block)
