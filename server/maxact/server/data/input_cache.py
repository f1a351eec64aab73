"""An on-disk cache of decoded model inputs, so a second scan of a dataset reads, not decodes.

What is stored is the uint8 RGB image after the geometry (resize, crop) and before
normalisation, so one entry serves every mean/std/channel order/layout. Layout:

    <cache dir>/<dataset>/<geometry>/<entry>.bin     24-byte header (original h, w; input h,
                                                      w; crc32; format) + h*w*3 pixel bytes

An entry's name hashes the image id with the file's size, mtime, inode and ctime: a changed
file has a new name and is decoded again, also when it was rewritten with the same size and
mtime (`cp -p`, rsync); the stale entry is never read and goes with its dataset's eviction.
The cache is a speed-up that is never trusted: an entry is opened without following a symlink,
read only when it is a regular file of exactly the size its header announces (within the
model-input bound), and used only when its crc32 (over the entry's name, header and pixels, so
a swapped entry fails too) matches; anything else is decoded again. A cache that cannot be
written (read-only folder, full disk, no inodes) never fails or skips an image: the image is
decoded as without a cache, with one warning.
The total size is bounded: when a write crosses the bound, whole datasets are evicted, least
recently used first; when the dataset being written alone fills the bound, writing stops (reads
continue). Writes go to a temporary file renamed into place, so readers never see half an entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import threading
import time
import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from maxact.server import limits
from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.ops.metrics import INPUT_CACHE_HITS, INPUT_CACHE_MISSES

log = logging.getLogger("maxact.server")

FORMAT_VERSION = 3
HEADER = 24  # six little-endian uint32: original h, w; input h, w; crc32; format version
STAMP = ".last_used"
_OPEN_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

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


def _checksum(name: str, header: bytes, pixels: np.ndarray) -> int:
    """crc32 of the entry's name, its header without the checksum and its pixels."""
    return zlib.crc32(pixels.data, zlib.crc32(header[:16], zlib.crc32(name.encode())))


def _header(original: tuple[int, int], shape: tuple[int, ...], checksum: int) -> bytes:
    fields = [*original, shape[0], shape[1], checksum, FORMAT_VERSION]
    return np.asarray(fields, dtype="<u4").tobytes()


class EntryRejected(Exception):
    """A cache entry that is not what this cache wrote for this key (decoded again)."""


def read_entry(entry: Path) -> Decoded | None:
    """The pixels of `entry`, None when there is none; EntryRejected when it is not a regular
    file of the announced size with a matching checksum. Never follows a symlink and never
    blocks on a FIFO or reads more than the model-input bound."""
    try:
        fd = os.open(entry, _OPEN_ENTRY)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink
        raise EntryRejected(f"cannot be opened as a file ({exc.strerror})") from None
    with open(fd, "rb", buffering=0) as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise EntryRejected("not a regular file")
        header = file.read(HEADER)
        if len(header) != HEADER:
            raise EntryRejected("shorter than its header")
        oh, ow, height, width, checksum, version = (
            int(v) for v in np.frombuffer(header, dtype="<u4")
        )
        if version != FORMAT_VERSION or height * width == 0:
            raise EntryRejected("a header this cache did not write")
        if height * width > limits.current().max_input_pixels:
            raise EntryRejected("a header announcing more than the model-input bound")
        if info.st_size != HEADER + height * width * 3:
            raise EntryRejected("not the size its header announces")
        pixels = np.empty((height, width, 3), np.uint8)
        if file.readinto(pixels.data.cast("B")) != pixels.nbytes:
            raise EntryRejected("shorter than its header announces")
    if _checksum(entry.stem, header, pixels) != checksum:
        raise EntryRejected("a checksum mismatch")
    return pixels, (oh, ow)


class InputCache:
    """The cache under `root`, at most `max_bytes` of entries (shared by every dataset)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._bytes: dict[str, int] = {}  # dataset folder name -> bytes of its entries
        self._last_used: dict[str, float] = {}
        self._full: set[str] = set()
        self._warned: set[str] = set()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            folders = [f for f in self.root.iterdir() if f.is_dir() and not f.is_symlink()]
        except OSError as exc:
            self.warn_once("root", f"cannot use the cache folder ({exc.strerror})")
            folders = []
        for folder in folders:
            self._bytes[folder.name] = _entry_bytes(folder)
            stamp = folder / STAMP
            self._last_used[folder.name] = stamp.stat().st_mtime if stamp.exists() else 0.0

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._bytes.values())

    def warn_once(self, kind: str, message: str) -> None:
        """One warning per kind of cache failure: the cache is a speed-up, its failures are
        not the scan's, and a log line per image would drown the log."""
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        log.warning("input cache: %s; decoding without it", message)

    def dataset(self, name: str) -> DatasetInputCache | None:
        """The part of the cache for one dataset (marks it used now); None when the cache
        folder cannot be written (the dataset is decoded as without a cache)."""
        folder = _slug(name)
        try:
            (self.root / folder).mkdir(parents=True, exist_ok=True)
            (self.root / folder / STAMP).touch()
        except OSError as exc:
            self.warn_once("folder", f"cannot write to the cache folder ({exc.strerror})")
            return None
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

    def _release(self, folder: str, size: int) -> None:
        """Give back bytes reserved for an entry that was not written (or was removed)."""
        with self._lock:
            if folder in self._bytes:
                self._bytes[folder] = max(0, self._bytes[folder] - size)


def _entry_bytes(folder: Path) -> int:
    """Bytes of the regular-file entries under `folder` (symlinks and the like count 0)."""
    total = 0
    for path in folder.rglob("*.bin"):
        try:
            info = path.lstat()
        except OSError:
            continue
        total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


class DatasetInputCache:
    """One dataset's entries; `decoded` returns cached pixels or decodes (and stores) them."""

    def __init__(self, cache: InputCache, folder: str) -> None:
        self.cache = cache
        self.folder = folder

    def _entry(self, image_id: str, path: Path, geometry: str) -> Path | None:
        try:
            info = path.stat()
        except OSError:
            return None  # let the decoder report the missing file
        key = f"{image_id}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ino}\0{info.st_ctime_ns}"
        name = hashlib.sha1(key.encode()).hexdigest()
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
            found = read_entry(entry)
        except EntryRejected as exc:
            self.cache.warn_once("entry", f"an entry was rejected ({exc})")
            self._remove(entry)
            found = None
        except OSError as exc:
            self.cache.warn_once("read", f"cannot read an entry ({exc.strerror})")
            found = None
        if found is not None:
            INPUT_CACHE_HITS.inc()
            return found
        INPUT_CACHE_MISSES.inc()
        pixels, original = decode()
        self._store(entry, pixels, original)
        return pixels, original

    def _remove(self, entry: Path) -> None:
        """Remove a rejected entry (the link itself when it is a symlink)."""
        try:
            info = entry.lstat()
            entry.unlink()
        except OSError:
            return
        if stat.S_ISREG(info.st_mode):
            self.cache._release(self.folder, info.st_size)

    def _store(self, entry: Path, pixels: np.ndarray, original: tuple[int, int]) -> None:
        """Write an entry; any failure only warns (a cache failure never fails an image)."""
        pixels = np.ascontiguousarray(pixels)
        checksum = _checksum(entry.stem, _header(original, pixels.shape, 0), pixels)
        header = _header(original, pixels.shape, checksum)
        size = len(header) + pixels.nbytes
        if not self.cache._admit(self.folder, size):
            return
        temporary = entry.with_name(f".{entry.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "xb") as file:
                file.write(header)
                file.write(pixels.data)
            os.replace(temporary, entry)
        except OSError as exc:  # a full disk, no inodes, a read-only folder
            self.cache._release(self.folder, size)
            self.cache.warn_once("write", f"cannot write an entry ({exc.strerror or exc})")
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
