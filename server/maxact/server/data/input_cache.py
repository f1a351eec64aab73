"""An on-disk cache of decoded model inputs, so a second scan of a dataset reads, not decodes.

What is stored is the uint8 RGB image after the geometry (resize, crop) and before
normalisation, so one entry serves every mean/std/channel order/layout. Layout:

    <cache dir>/<dataset>/<geometry>/<entry>.bin     16-byte header (original h, w; input h, w)
                                                      + h*w*3 pixel bytes

An entry's name hashes the image id with the file's size and mtime: a changed file has a new
name and is decoded again (the stale entry is never read and goes with its dataset's eviction).
The total size is bounded: when a write crosses the bound, whole datasets are evicted, least
recently used first; when the dataset being written alone fills the bound, writing stops (reads
continue). Writes go to a temporary file renamed into place, so readers never see half an entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.ops.metrics import INPUT_CACHE_HITS, INPUT_CACHE_MISSES

log = logging.getLogger("maxact.server")

FORMAT_VERSION = 2
HEADER = 16
STAMP = ".last_used"

Decoded = tuple[np.ndarray, tuple[int, int]]  # (uint8 [H, W, 3] pixels, original (h, w))


def _slug(text: str) -> str:
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40]
    return f"{readable}-{digest}"


@lru_cache(maxsize=256)
def geometry_key(prep: ResolvedPreprocessing, draft: bool) -> str:
    """What decides the cached pixels: the geometry and the decoder, not the normalisation."""
    return _slug(
        f"v{FORMAT_VERSION} size={prep.size} shorter={prep.resize_shorter} "
        f"crop={prep.center_crop} multiple={prep.size_multiple} letterbox={prep.letterbox} "
        f"pad={prep.pad_value} draft={draft} fast={prep.fast_decode}"
    )


class InputCache:
    """The cache under `root`, at most `max_bytes` of entries (shared by every dataset)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._bytes: dict[str, int] = {}  # dataset folder name -> bytes of its entries
        self._last_used: dict[str, float] = {}
        self._full: set[str] = set()
        for folder in self.root.iterdir():
            if folder.is_dir():
                self._bytes[folder.name] = sum(
                    p.stat().st_size for p in folder.rglob("*.bin") if p.is_file()
                )
                stamp = folder / STAMP
                self._last_used[folder.name] = stamp.stat().st_mtime if stamp.exists() else 0.0

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._bytes.values())

    def dataset(self, name: str) -> DatasetInputCache:
        """The part of the cache for one dataset (marks it used now)."""
        folder = _slug(name)
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / folder / STAMP).touch()
        with self._lock:
            self._bytes.setdefault(folder, 0)
            self._last_used[folder] = time.time()
            self._full.discard(folder)  # evictions since may have made room
        return DatasetInputCache(self, folder)

    def _admit(self, folder: str, size: int) -> bool:
        """Reserve `size` bytes for `folder`, evicting least recently used datasets if needed."""
        with self._lock:
            if folder in self._full:
                return False
            self._last_used[folder] = time.time()
            victims = sorted(
                (f for f in self._bytes if f != folder), key=lambda f: self._last_used.get(f, 0)
            )
            while sum(self._bytes.values()) + size > self.max_bytes and victims:
                victim = victims.pop(0)
                shutil.rmtree(self.root / victim, ignore_errors=True)
                log.info("input cache: evicted %s (%d bytes)", victim, self._bytes[victim])
                del self._bytes[victim]
                self._last_used.pop(victim, None)
            if sum(self._bytes.values()) + size > self.max_bytes:
                self._full.add(folder)
                log.info("input cache: %s fills the cache bound; no more entries", folder)
                return False
            self._bytes[folder] = self._bytes.get(folder, 0) + size
            return True


class DatasetInputCache:
    """One dataset's entries; `decoded` returns cached pixels or decodes (and stores) them."""

    def __init__(self, cache: InputCache, folder: str) -> None:
        self.cache = cache
        self.folder = folder

    def _entry(self, image_id: str, path: Path, geometry: str) -> Path | None:
        try:
            stat = path.stat()
        except OSError:
            return None  # let the decoder report the missing file
        name = hashlib.sha1(f"{image_id}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
        return self.cache.root / self.folder / geometry / f"{name}.bin"

    def decoded(
        self,
        image_id: str,
        path: Path,
        prep: ResolvedPreprocessing,
        draft: bool,
        decode: Callable[[], Decoded],
    ) -> Decoded:
        entry = self._entry(image_id, path, geometry_key(prep, draft))
        if entry is None:
            return decode()
        try:
            data = entry.read_bytes()
        except OSError:
            data = b""
        if len(data) >= HEADER:
            header = np.frombuffer(data, dtype="<u4", count=4)
            height, width = int(header[2]), int(header[3])
            if len(data) == HEADER + height * width * 3:
                pixels = np.frombuffer(data, np.uint8, offset=HEADER).reshape(height, width, 3)
                INPUT_CACHE_HITS.inc()
                return pixels, (int(header[0]), int(header[1]))
        INPUT_CACHE_MISSES.inc()
        pixels, original = decode()
        self._store(entry, pixels, original)
        return pixels, original

    def _store(self, entry: Path, pixels: np.ndarray, original: tuple[int, int]) -> None:
        header = np.asarray([*original, *pixels.shape[:2]], dtype="<u4").tobytes()
        data = header + np.ascontiguousarray(pixels).tobytes()
        if not self.cache._admit(self.folder, len(data)):
            return
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary = entry.with_name(f".{entry.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, entry)
        except OSError as exc:  # a full disk must not fail the scan
            log.warning("input cache: cannot write an entry: %s", exc)
            temporary.unlink(missing_ok=True)
