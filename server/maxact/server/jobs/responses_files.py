"""A scan's per-image responses on disk: one .npy file per layer, R[image, channel] float32.

Layout: `<state_dir>/responses/<scan id>/manifest.json` (images, and per layer its channels
and file) beside `layer-<i>.npy`. Each file is a standard .npy of shape [images, channels]
stored column-major (`fortran_order`), so one channel's responses are contiguous: a question
about a channel reads its column, never the matrix. Files are allocated in full when the scan
starts (a full disk fails the scan then, with the reason, not halfway), and blocks of rows
are written with plain positioned writes, never through a writable memory map (a write to a
sparse map on a full disk kills the process). Rows are written before the checkpoint that
counts them is committed, so a resumed scan finds every counted row.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from maxact.server.compile_lock import COMPILE_LOCK
from maxact.server.errors import Code, ServiceError

_MANIFEST = "manifest.json"
_DTYPE = np.dtype("<f4")
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class ResponsesLayout:
    """What a scan keeps: its image count and, per layer, channels and file name."""

    images: int
    layers: dict[str, tuple[int, str]]  # layer -> (channels, file name)

    @property
    def bytes(self) -> int:
        return self.images * sum(channels for channels, _ in self.layers.values()) * 4


def _disk_error(exc: OSError, what: str) -> ServiceError:
    if exc.errno in _FULL:
        return ServiceError(
            Code.RESOURCE_EXHAUSTED,
            "RESPONSES_DISK_FULL",
            f"no disk space left for the scan's per-image responses ({what}): free space in "
            "the server's state directory, or scan again with --responses off",
        )
    return ServiceError(
        Code.UNAVAILABLE,
        "RESPONSES_UNAVAILABLE",
        f"the scan's per-image responses cannot be {what} ({exc.strerror or type(exc).__name__})",
    )


class ResponsesFiles:
    """The responses folders of every scan under `root` (`<state_dir>/responses`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, scan_id: str) -> Path:
        return self.root / scan_id

    def create(self, scan_id: str, images: int, layers: dict[str, int]) -> None:
        """Record that `scan_id` keeps responses for `layers` (name -> channels)."""
        folder = self.folder(scan_id)
        manifest = {
            "images": images,
            "layers": [
                {"name": name, "channels": channels, "file": f"layer-{i}.npy"}
                for i, (name, channels) in enumerate(layers.items())
            ],
        }
        try:
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / (_MANIFEST + ".tmp")
            temporary.write_text(json.dumps(manifest))
            temporary.replace(folder / _MANIFEST)
        except OSError as exc:
            raise _disk_error(exc, "recorded") from None

    def layout(self, scan_id: str) -> ResponsesLayout | None:
        """The scan's layout, or None when it keeps no responses (or its manifest is not
        readable: then it answers as a scan without them)."""
        try:
            manifest = json.loads((self.folder(scan_id) / _MANIFEST).read_text())
            layers = {
                str(entry["name"]): (int(entry["channels"]), str(entry["file"]))
                for entry in manifest["layers"]
            }
            if any(Path(file).name != file for _, file in layers.values()):
                return None
            return ResponsesLayout(int(manifest["images"]), layers)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def path(self, scan_id: str, file: str) -> Path:
        return self.folder(scan_id) / file

    def allocated(self, scan_id: str) -> ResponsesLayout | None:
        """The scan's layout with its files allocated (None: it keeps no responses)."""
        layout = self.layout(scan_id)
        if layout is not None:
            self.allocate(scan_id, layout)
        return layout

    def allocate(self, scan_id: str, layout: ResponsesLayout) -> None:
        """Create each layer's file at its full size (kept when a previous run made it)."""
        for channels, file in layout.layers.values():
            path = self.path(scan_id, file)
            header = {
                "descr": npy.dtype_to_descr(_DTYPE),
                "fortran_order": True,
                "shape": (layout.images, channels),
            }
            try:
                if path.exists() and _data_offset(path) is not None:
                    continue
                with open(path, "wb") as stream:
                    npy.write_array_header_2_0(stream, header)
                    size = layout.images * channels * _DTYPE.itemsize
                    if size:
                        os.posix_fallocate(stream.fileno(), stream.tell(), size)
            except OSError as exc:
                path.unlink(missing_ok=True)
                raise _disk_error(exc, "stored") from None

    def write(
        self, scan_id: str, layout: ResponsesLayout, first: int, blocks: dict[str, np.ndarray]
    ) -> None:
        """Write rows first.. of each layer (`blocks`: layer -> float32 [rows, channels]),
        before the checkpoint that counts them is committed: a killed server loses nothing
        written (the page cache keeps it), as the store's own commits (WAL, synchronous
        NORMAL) need no flush to disk either."""
        for name, block in blocks.items():
            channels, file = layout.layers[name]
            block = np.asarray(block, dtype=_DTYPE)
            rows = block.shape[0]
            if rows == 0:
                continue
            if block.shape[1] != channels or first + rows > layout.images:
                raise ValueError(f"a responses block of shape {block.shape} at row {first}")
            path = self.path(scan_id, file)
            try:
                offset = _data_offset(path)
                if offset is None:
                    raise FileNotFoundError(errno.ENOENT, "missing or damaged", str(path.name))
                column_bytes = layout.images * _DTYPE.itemsize
                columns = np.asfortranarray(block)
                fd = os.open(path, os.O_WRONLY)
                try:
                    for channel in range(channels):
                        data = columns[:, channel].tobytes()
                        at = offset + channel * column_bytes + first * _DTYPE.itemsize
                        os.pwrite(fd, data, at)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _disk_error(exc, "written") from None

    def matrix(self, scan_id: str, layout: ResponsesLayout, layer: str) -> np.ndarray:
        """The layer's [images, channels] matrix, memory-mapped read-only (column-major:
        a column, or a run of columns, is one contiguous read)."""
        _, file = layout.layers[layer]
        with COMPILE_LOCK:  # the header is parsed with ast: see compile_lock
            array: np.ndarray = np.load(self.path(scan_id, file), mmap_mode="r", allow_pickle=False)
        return array

    def delete(self, scan_id: str) -> None:
        shutil.rmtree(self.folder(scan_id), ignore_errors=True)


def _data_offset(path: Path) -> int | None:
    """Where the array data of the .npy at `path` starts (None: no readable header)."""
    try:
        with open(path, "rb") as stream:
            version = npy.read_magic(stream)
            if version == (1, 0):
                npy.read_array_header_1_0(stream)
            else:
                npy.read_array_header_2_0(stream)
            return stream.tell()
    except (OSError, ValueError):
        return None
