"""Datasets stored as shards: WebDataset-style `.tar` files and Parquet files in a dataset folder.

A dataset folder holding `.tar` or `.parquet` files (directly inside it) is ONE dataset. An
image id is `SHARD/KEY`: the shard's file name, then the sample's key inside it, so the id
alone says where its bytes are. Dataset order: shards by file name, then samples in the order
the shard stores them (the order a stream reads them in).

- `.tar` (WebDataset): members `KEY.jpg|jpeg|png|...` (the image) and optionally `KEY.cls`
  (the label as text); KEY is the member path up to the first dot of its base name.
- `.parquet` (e.g. a Hugging Face datasets export): an image column (`image`/`img`/... or the
  first binary column), either binary or a struct with a `bytes` field ({bytes, path} as
  Hugging Face writes it), and optionally a label column (`label`/`labels`/`cls`/`class`;
  integer labels are named by the Hugging Face ClassLabel names in the file's metadata when
  present). The key is the `__key__`/`key` column when present, else the row number.

Reading is streamed: a scan reads each shard front to back (tarfile streaming mode / pyarrow
`iter_batches`), holding one sample (tar) or one record batch (Parquet) at a time, never a
whole shard. A single image (a patch to crop) is read through a per-shard index of where each
sample lies (tar: byte offset; Parquet: row group and row), built once per shard file version.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from maxact.server.data.reader import ImageSource

if TYPE_CHECKING:
    from maxact.server.data.input_cache import DatasetInputCache

TAR_SUFFIX = ".tar"
PARQUET_SUFFIX = ".parquet"
SHARD_SUFFIXES = (TAR_SUFFIX, PARQUET_SUFFIX)
TAR_IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff"})
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_COLUMNS = ("label", "labels", "cls", "class")
KEY_COLUMNS = ("__key__", "key")
PARQUET_BATCH_ROWS = 64  # rows per streamed record batch: bounds memory to ~64 images
PARQUET_EXTRA = "parquet"


class ShardError(ValueError):
    """A shard file cannot be read as a dataset shard."""


def shard_files(root: Path) -> list[Path]:
    """The shard files directly in `root`, by name (empty: not a sharded dataset)."""
    return sorted(
        (
            entry
            for entry in root.iterdir()
            if entry.is_file()
            and not entry.name.startswith(".")
            and entry.suffix.lower() in SHARD_SUFFIXES
        ),
        key=lambda entry: entry.name,
    )


def is_sharded(root: Path) -> bool:
    return root.is_dir() and bool(shard_files(root))


def shard_of(root: Path, image_id: str) -> tuple[Path, str] | None:
    """(shard file, key) when `image_id` names a sample inside a shard of `root`, else None."""
    shard, sep, key = image_id.partition("/")
    if not sep or not key or not shard.lower().endswith(SHARD_SUFFIXES):
        return None
    path = root / shard
    if shard.startswith(".") or not path.is_file():
        return None
    return path, key


@dataclass(frozen=True)
class Sample:
    key: str
    label: str | None


def list_sharded(root: Path) -> tuple[list[str], dict[str, str]]:
    """(ids in dataset order, labels by id) of a sharded dataset; reads tar headers and label
    members only, and only the key/label columns of Parquet files."""
    ids: list[str] = []
    labels: dict[str, str] = {}
    for path in shard_files(root):
        for sample in _samples(path):
            image_id = f"{path.name}/{sample.key}"
            ids.append(image_id)
            if sample.label is not None:
                labels[image_id] = sample.label
    return ids, labels


def _samples(path: Path) -> list[Sample]:
    if path.suffix.lower() == TAR_SUFFIX:
        return _tar_index(*_index_key(path)).samples
    return _parquet_index(*_index_key(path)).samples


def _index_key(path: Path) -> tuple[str, int, int]:
    """What a shard's cached index is keyed on: a rewritten shard is indexed again."""
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


# -- tar -----------------------------------------------------------------------------------


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset naming: (key, extension) where the key ends at the first dot of the base."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, extension.lower() if dot else ""


@dataclass(frozen=True)
class _TarIndex:
    samples: list[Sample]
    location: dict[str, tuple[int, int]]  # key -> (data offset, size) of its image member


@lru_cache(maxsize=64)
def _tar_index(path: str, mtime_ns: int, size: int) -> _TarIndex:
    """One pass over the headers (data is skipped by seeking; `.cls` members are read)."""
    location: dict[str, tuple[int, int]] = {}
    label_of: dict[str, str] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, extension = _split_member(member.name)
                if extension in TAR_IMAGE_EXTENSIONS and key not in location:
                    location[key] = (member.offset_data, member.size)
                    order.append(key)
                elif extension == "cls":
                    handle = archive.extractfile(member)
                    if handle is not None:
                        label_of[key] = handle.read(1024).decode("utf-8", "replace").strip()
    except tarfile.TarError as exc:
        raise ShardError(f"shard {Path(path).name!r} is not a readable tar file: {exc}") from None
    return _TarIndex([Sample(key, label_of.get(key)) for key in order], location)


def _tar_stream(path: Path, wanted: dict[str, int]) -> Iterator[tuple[int, str, bytes]]:
    """(dataset index, key, image bytes) of the wanted keys, reading the tar front to back."""
    remaining = dict(wanted)
    with tarfile.open(path, "r|") as archive:
        for member in archive:
            if not remaining:
                return
            if not member.isfile():
                continue
            key, extension = _split_member(member.name)
            if extension not in TAR_IMAGE_EXTENSIONS or key not in remaining:
                continue
            handle = archive.extractfile(member)
            if handle is not None:
                yield remaining.pop(key), key, handle.read()


def _tar_read(path: Path, key: str) -> bytes:
    index = _tar_index(*_index_key(path))
    if key not in index.location:
        raise FileNotFoundError(f"no image {key!r} in shard {path.name!r}")
    offset, size = index.location[key]
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


# -- parquet -------------------------------------------------------------------------------


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ShardError(
            "this dataset holds Parquet shards, which need pyarrow: "
            f"pip install 'maxact[{PARQUET_EXTRA}]'"
        ) from None
    return pq


@dataclass(frozen=True)
class _ParquetIndex:
    samples: list[Sample]
    location: dict[str, tuple[int, int]]  # key -> (row group, row inside it)
    image_column: str
    image_in_struct: bool


def _columns(schema: Any, path: str) -> tuple[str, bool, str | None, str | None]:
    """(image column, whether it is a {bytes, path} struct, label column, key column)."""
    import pyarrow as pa

    fields = {field.name: field for field in schema}

    def image_like(field: Any) -> bool:
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            return True
        return pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0

    named = [name for name in IMAGE_COLUMNS if name in fields and image_like(fields[name])]
    image = named[0] if named else next((f.name for f in schema if image_like(f)), None)
    if image is None:
        raise ShardError(
            f"shard {Path(path).name!r} has no image column: expected a binary column or a"
            f" struct with 'bytes' (one of {list(IMAGE_COLUMNS)} or any binary column)"
        )
    label = next((name for name in LABEL_COLUMNS if name in fields), None)
    key = next((name for name in KEY_COLUMNS if name in fields), None)
    return image, pa.types.is_struct(fields[image].type), label, key


def _class_names(metadata: dict[bytes, bytes] | None, column: str) -> list[str] | None:
    """Hugging Face ClassLabel names of `column`, from the file's `huggingface` metadata."""
    raw = (metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        features = json.loads(raw)["info"]["features"]
        names = features[column]["names"]
    except (ValueError, KeyError, TypeError):
        return None
    return [str(name) for name in names] if isinstance(names, list) else None


@lru_cache(maxsize=64)
def _parquet_index(path: str, mtime_ns: int, size: int) -> _ParquetIndex:
    """Reads only the key and label columns, a record batch at a time."""
    pq = _pyarrow_parquet()
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise ShardError(f"shard {Path(path).name!r} is not a readable Parquet file") from exc
    image, in_struct, label_column, key_column = _columns(parquet.schema_arrow, path)
    names = _class_names(parquet.schema_arrow.metadata, label_column) if label_column else None
    columns = [c for c in (key_column, label_column) if c is not None]
    samples: list[Sample] = []
    location: dict[str, tuple[int, int]] = {}
    row = 0
    width = max(6, len(str(parquet.metadata.num_rows - 1)))
    for group in range(parquet.num_row_groups):
        inside = 0
        if columns:
            batches = parquet.iter_batches(PARQUET_BATCH_ROWS, row_groups=[group], columns=columns)
            chunks = [
                (
                    batch.num_rows,
                    batch.column(key_column).to_pylist() if key_column else None,
                    batch.column(label_column).to_pylist() if label_column else None,
                )
                for batch in batches
            ]
        else:
            chunks = [(parquet.metadata.row_group(group).num_rows, None, None)]
        for rows, keys, values in chunks:
            for j in range(rows):
                key = str(keys[j]) if keys is not None else f"{row:0{width}d}"
                location[key] = (group, inside)
                samples.append(Sample(key, _label_text(values[j], names) if values else None))
                row += 1
                inside += 1
    return _ParquetIndex(samples, location, image, in_struct)


def _label_text(value: Any, names: list[str] | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and names is not None and 0 <= value < len(names):
        return names[value]
    return str(value)


def _image_bytes(value: Any, in_struct: bool) -> bytes:
    data = value.get("bytes") if in_struct and isinstance(value, dict) else value
    if not data:
        raise ValueError("cannot read image: the Parquet row holds no image bytes")
    return bytes(data)


def _parquet_stream(path: Path, wanted: dict[str, int]) -> Iterator[tuple[int, str, bytes]]:
    """(dataset index, key, image bytes) of the wanted keys, one record batch in memory."""
    index = _parquet_index(*_index_key(path))
    parquet = _pyarrow_parquet().ParquetFile(path)
    groups = sorted({index.location[key][0] for key in wanted if key in index.location})
    keys_by_place = {index.location[key]: key for key in wanted if key in index.location}
    for group in groups:
        inside = 0
        for batch in parquet.iter_batches(
            PARQUET_BATCH_ROWS, row_groups=[group], columns=[index.image_column]
        ):
            column = batch.column(0)
            for j in range(batch.num_rows):
                key = keys_by_place.get((group, inside + j))
                if key is not None:
                    yield wanted[key], key, _raw(column[j].as_py(), index.image_in_struct)
            inside += batch.num_rows


def _raw(value: Any, in_struct: bool) -> bytes:
    """The image bytes, or b"" (the image then fails to decode and is skipped)."""
    try:
        return _image_bytes(value, in_struct)
    except ValueError:
        return b""


def _parquet_read(path: Path, key: str) -> bytes:
    index = _parquet_index(*_index_key(path))
    if key not in index.location:
        raise FileNotFoundError(f"no image {key!r} in shard {path.name!r}")
    group, row = index.location[key]
    parquet = _pyarrow_parquet().ParquetFile(path)
    seen = 0
    for batch in parquet.iter_batches(
        PARQUET_BATCH_ROWS, row_groups=[group], columns=[index.image_column]
    ):
        if row < seen + batch.num_rows:
            return _image_bytes(batch.column(0)[row - seen].as_py(), index.image_in_struct)
        seen += batch.num_rows
    raise FileNotFoundError(f"no image {key!r} in shard {path.name!r}")


# -- sources -------------------------------------------------------------------------------


def _opener(data: bytes) -> Callable[[], Image.Image]:
    return lambda: Image.open(io.BytesIO(data))


def shard_source(root: Path, index: int, image_id: str) -> ImageSource:
    """One sample, read on demand through the shard's index (for cropping a patch)."""
    located = shard_of(root, image_id)
    if located is None:
        raise FileNotFoundError(f"{image_id!r} is not a sample of a shard")
    path, key = located
    read = _tar_read if path.suffix.lower() == TAR_SUFFIX else _parquet_read
    return ImageSource(index, image_id, lambda: Image.open(io.BytesIO(read(path, key))))


def stream_shard_sources(
    root: Path,
    ids: Sequence[str],
    indices: Sequence[int],
    cache: DatasetInputCache | None = None,
) -> Iterator[ImageSource]:
    """Sources of `ids` (dataset indices `indices`), reading each shard once front to back.

    Ids must be in dataset order (shard by shard); an id missing from its shard comes out as
    a source that fails to open (the scan reports it skipped). With `cache`, a sample's
    decoded input is cached keyed on its id and its shard file (a rewritten shard is decoded
    again).
    """
    pairs = list(zip(indices, ids, strict=True))
    pairs = list(zip(indices, ids, strict=True))
    for shard, group in groupby(pairs, key=lambda pair: pair[1].partition("/")[0]):
        members = list(group)
        path = root / shard
        wanted = {image_id.partition("/")[2]: index for index, image_id in members}
        stream = _tar_stream if path.suffix.lower() == TAR_SUFFIX else _parquet_stream
        samples = stream(path, wanted)
        # the shard yields the wanted samples in its own order, which is the dataset order:
        # normally one sample is held at a time
        arrived: dict[int, bytes] = {}
        for index, image_id in members:
            while index not in arrived:
                item = next(samples, None)
                if item is None:
                    break
                arrived[item[0]] = item[2]
            data = arrived.pop(index, None)
            opener = _opener(data) if data else _vanished(image_id)
            yield ImageSource(index, image_id, opener, path if cache else None, cache)


def _vanished(image_id: str) -> Callable[[], Image.Image]:
    def fail() -> Image.Image:
        raise FileNotFoundError(f"sample {image_id!r} is no longer in its shard")

    return fail
