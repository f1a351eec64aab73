"""Receive a model file safely: temp file beside the target, verify, then one atomic rename.

The upload never exists under its final name until it is complete, its SHA-256 matches and it
parses as an ONNX model maxact can use. A failure at any step (bad checksum, cancelled stream,
too large, not ONNX) removes the temp file, so nothing half-written stays under the model root;
temp files have a hidden name, so the model listing never shows them even while they grow.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from maxact.server.data.preprocess import parse_json
from maxact.server.errors import (
    Code,
    ServiceError,
    already_exists,
    failed_precondition,
    invalid_argument,
)
from maxact.server.graph.surgery import image_input
from maxact.server.models.feedable import text_problem, unsupported_input
from maxact.server.models.file_mode import give_default_mode
from maxact.server.paths import check_name, is_inside, resolve_under

log = logging.getLogger("maxact.server")

MODEL_SUFFIX = ".onnx"
SIDECAR_SUFFIX = ".preprocess.json"
TEMP_PREFIX = ".maxact-upload-"
TEMP_SUFFIX = ".part"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def too_large(message: str, **metadata: str) -> ServiceError:
    return ServiceError(Code.RESOURCE_EXHAUSTED, "UPLOAD_TOO_LARGE", message, metadata)


class ModelUpload:
    """One upload in progress: `write` chunks, then `commit`; `abort` is always safe to call."""

    def __init__(
        self,
        model_root: Path,
        name: str,
        sha256: str,
        *,
        max_bytes: int,
        overwrite: bool = False,
        preprocess_json: str = "",
    ) -> None:
        self.name = name
        self.target = model_target(model_root, name)
        self.expected = _checked_digest(sha256)
        self.max_bytes = max_bytes
        self.overwrite = overwrite
        self.sidecar_text = _checked_sidecar(preprocess_json, name)
        if self.target.is_dir():
            raise invalid_argument(
                "INVALID_NAME", f"model name {name!r} is a folder under the model root", name=name
            )
        if self.target.exists() and not overwrite:
            raise already_exists(
                "MODEL_EXISTS",
                f"model {name!r} already exists; upload it again with --overwrite "
                "(Client.upload_model(..., overwrite=True)) to replace it",
                model=name,
            )
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=self.target.parent)
        give_default_mode(fd)
        self.temp: Path | None = Path(temp)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append a chunk; over the size limit the upload fails at once (no waiting for the end)."""
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise too_large(
                f"model upload {self.name!r} exceeds the server's limit of "
                f"{self.max_bytes // (1024 * 1024)} MiB",
                model=self.name,
                limit_bytes=str(self.max_bytes),
            )
        self._file.write(chunk)
        self._hash.update(chunk)

    def commit(self) -> int:
        """Verify and place the file under its name; returns its size in bytes."""
        digest = self._hash.hexdigest()
        if digest != self.expected:
            raise invalid_argument(
                "CHECKSUM_MISMATCH",
                f"model upload {self.name!r}: received {self.size} bytes with SHA-256 {digest}, "
                f"expected {self.expected}; the upload was truncated or corrupted and is discarded",
                model=self.name,
            )
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        assert self.temp is not None
        check_model_file(self.temp, self.target.parent, self.name)
        self._place()
        self.temp = None
        if self.sidecar_text is not None:
            _write_atomically(_sidecar_path(self.target), self.sidecar_text)
        log.info("model %s uploaded (%d bytes)", self.name, self.size)
        return self.size

    def abort(self) -> None:
        """Remove the temp file (idempotent; a no-op after a successful commit)."""
        if not self._file.closed:
            self._file.close()
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None

    def _place(self) -> None:
        """Atomic rename; without overwrite a hard link refuses to clobber a racing upload."""
        assert self.temp is not None
        if self.overwrite:
            os.replace(self.temp, self.target)
            return
        try:
            os.link(self.temp, self.target)
        except FileExistsError:
            raise already_exists(
                "MODEL_EXISTS",
                f"model {self.name!r} was created while this upload ran",
                model=self.name,
            ) from None
        except OSError:  # a filesystem without hard links: check, then rename
            if self.target.exists():
                raise already_exists(
                    "MODEL_EXISTS",
                    f"model {self.name!r} was created while this upload ran",
                    model=self.name,
                ) from None
            os.replace(self.temp, self.target)
            return
        self.temp.unlink()


def model_target(model_root: Path, name: str) -> Path:
    """Where model `name` lives; names follow the model-name rules and stay inside the root."""
    check_name(name, "model")
    return resolve_under(model_root, name + MODEL_SUFFIX, "model")


def check_model_file(path: Path, folder: Path, name: str) -> None:
    """Refuse a file that is not an ONNX model with an image input, or whose external data would
    be read from outside `folder` (or is missing)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    def bad(message: str) -> ServiceError:
        return invalid_argument("MODEL_INVALID", f"model upload {name!r}: {message}", model=name)

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise bad(f"not a readable ONNX model: {exc}") from exc
    if not proto.graph.node:
        raise bad("not an ONNX model (no graph nodes)")
    garbled = text_problem(proto)
    if garbled is not None:
        raise bad(garbled)
    try:
        model_input = image_input(proto)
    except ValueError as exc:
        raise bad(str(exc)) from exc
    reason = unsupported_input(proto, model_input)
    if reason is not None:
        raise failed_precondition(
            "MODEL_UNSUPPORTED", f"model upload {name!r} cannot be scanned: {reason}", model=name
        )
    tensors = list(proto.graph.initializer) + [
        attribute.t
        for node in proto.graph.node
        for attribute in node.attribute
        if attribute.HasField("t")
    ]
    for tensor in tensors:
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        target = (folder / location).resolve()
        if os.path.isabs(location) or not is_inside(folder, target):
            raise bad(f"external data {location!r} lies outside the model's folder")
        if not target.is_file():
            raise bad(f"external data {location!r} is missing from the model's folder")


def remove_stale_uploads(model_root: Path) -> int:
    """Delete temp files left by a server that died mid-upload; returns how many."""
    removed = 0
    if not model_root.is_dir():
        return 0
    for path in model_root.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        if path.is_file() and is_inside(model_root, path):
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d unfinished model upload(s) under %s", removed, model_root)
    return removed


def _checked_digest(sha256: str) -> str:
    digest = sha256.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise invalid_argument(
            "INVALID_CHECKSUM",
            f"sha256 must be 64 hex digits of the whole file, got {sha256!r}",
        )
    return digest


def _checked_sidecar(text: str, name: str) -> str | None:
    if not text:
        return None
    parse_json(text, f"preprocess_json of model upload {name!r}")  # validates
    return text


def _sidecar_path(target: Path) -> Path:
    return target.with_name(target.name[: -len(MODEL_SUFFIX)] + SIDECAR_SUFFIX)


def _write_atomically(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        give_default_mode(fd)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
