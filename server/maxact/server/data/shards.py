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

Every sample is read within the encoded-image bound (`limits.check_image_bytes`), checked
against what the file claims before any of it is read: a tar member's header size, a Parquet
row group's uncompressed image-column size from the footer. What fails (too large, a corrupt
page, a truncated member) skips those samples with the reason; the rest of the shard goes on.
A row group pyarrow fails on is read again page by page (`parquet_salvage`), so a damaged
Parquet page loses only its own rows.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maxact.server import limits
from maxact.server.data.labels import MAX_LABEL_CHARS, label_problem
from maxact.server.data.parquet_salvage import Unsalvageable, misplaced_rows, salvage_cells
from maxact.server.data.reader import ImageSource, failing_source, open_bytes

if TYPE_CHECKING:
    from maxact.server.data.input_cache import DatasetInputCache

log = logging.getLogger(__name__)

TAR_SUFFIX = ".tar"
PARQUET_SUFFIX = ".parquet"
SHARD_SUFFIXES = (TAR_SUFFIX, PARQUET_SUFFIX)
TAR_IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff"})
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_COLUMNS = ("label", "labels", "cls", "class")
KEY_COLUMNS = ("__key__", "key")
PARQUET_BATCH_ROWS = 64  # rows per streamed record batch: bounds memory to ~64 images
PARQUET_BATCH_IMAGES = 4  # and a batch holds at most this many images at the byte bound
PARQUET_GROUP_IMAGES = 16  # a row group's image column is inflated whole: at most this many
PARQUET_EXTRA = "parquet"
MAX_LABEL_BYTES = 4 * MAX_LABEL_CHARS  # UTF-8 bytes of the longest label allowed


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
                    label_of[key] = _tar_label(archive, member, Path(path).name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardError(f"shard {Path(path).name!r} is not a readable tar file: {exc}") from None
    return _TarIndex([Sample(key, label_of.get(key)) for key in order], location)


def _tar_label(archive: tarfile.TarFile, member: tarfile.TarInfo, shard: str) -> str:
    """A `.cls` member's text, read only up to the label bound (a longer one is refused)."""
    handle = archive.extractfile(member)
    if handle is None:
        return ""
    if member.size > MAX_LABEL_BYTES:
        problem: str | None = f"a label of {member.size:,} bytes, at most {MAX_LABEL_BYTES}"
    else:
        label = handle.read(MAX_LABEL_BYTES).decode("utf-8", "replace").strip()
        problem = label_problem(label)
    if problem is not None:
        raise ShardError(f"shard {shard!r}: the label of {member.name!r}: {problem}")
    return label


Item = tuple[int, str, "bytes | Exception"]
"""(dataset index, key, the image bytes or why they cannot be read) of one wanted sample."""


def _tar_stream(path: Path, wanted: dict[str, int]) -> Iterator[Item]:
    """The wanted keys, reading the tar front to back; a member's size is checked from its
    header before it is read (the seekable reader skips unwanted data without reading it)."""
    remaining = dict(wanted)
    with tarfile.open(path, "r:") as archive:
        for member in archive:
            if not remaining:
                return
            if not member.isfile():
                continue
            key, extension = _split_member(member.name)
            if extension not in TAR_IMAGE_EXTENSIONS or key not in remaining:
                continue
            too_large = limits.image_bytes_error(member.size, f"tar member {member.name!r}")
            if too_large is not None:
                yield remaining.pop(key), key, too_large
                continue
            handle = archive.extractfile(member)
            if handle is not None:
                yield remaining.pop(key), key, handle.read()


def _tar_read(path: Path, key: str) -> bytes:
    index = _tar_index(*_index_key(path))
    if key not in index.location:
        raise FileNotFoundError(f"no image {key!r} in shard {path.name!r}")
    offset, size = index.location[key]
    limits.check_image_bytes(size, f"tar member {key!r}")
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


# -- parquet -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _pyarrow_parquet() -> Any:
    """pyarrow.parquet, with Arrow allocating through malloc: its default allocators (mimalloc,
    jemalloc) reserve large address ranges and abort the whole process (std::bad_alloc, uncaught
    in their threads) under an address-space limit or a tight cgroup, where malloc fails one
    allocation that is then reported and skipped."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # read when pyarrow loads
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ShardError(
            "this dataset holds Parquet shards, which need pyarrow: "
            f"pip install 'maxact[{PARQUET_EXTRA}]'"
        ) from None
    pa.set_memory_pool(pa.system_memory_pool())
    return pq


def _parquet_file(path: Path | str, pq: Any = None) -> Any:
    """A pyarrow ParquetFile that verifies the page checksums a writer wrote: a damaged page
    fails (and is skipped) instead of giving altered bytes."""
    return (pq or _pyarrow_parquet()).ParquetFile(path, page_checksum_verification=True)


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
        return bool(pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0)

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
        return _read_parquet_index(_parquet_file(path, pq), path)
    except ShardError:
        raise
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid, ... for a damaged file
        raise ShardError(
            f"shard {Path(path).name!r} is not a readable Parquet file: {exc}"
        ) from None


def _read_parquet_index(parquet: Any, path: str) -> _ParquetIndex:
    image, in_struct, label_column, key_column = _columns(parquet.schema_arrow, path)
    names = _class_names(parquet.schema_arrow.metadata, label_column) if label_column else None
    samples: list[Sample] = []
    location: dict[str, tuple[int, int]] = {}
    first = 0  # the dataset row of the group's first row
    width = max(6, len(str(parquet.metadata.num_rows - 1)))
    for group in range(parquet.num_row_groups):
        try:
            _trust_pyarrow(Path(path), parquet, group, [key_column, label_column])
            rows = _index_rows(parquet, group, key_column, label_column)
        except Exception as exc:  # pyarrow: OSError, ArrowInvalid, ... from a damaged page
            rows = _salvaged_index_rows(Path(path), parquet, group, (key_column, label_column), exc)
        for inside, key_value, label_value in rows:
            row = first + inside
            key = str(key_value) if key_column else f"{row:0{width}d}"
            location[key] = (group, inside)
            label = _label_text(label_value, names)
            problem = label_problem(label) if label is not None else None
            if problem is not None:
                raise ShardError(f"shard {Path(path).name!r}: row {row}: {problem}")
            samples.append(Sample(key, label))
        first += parquet.metadata.row_group(group).num_rows
    return _ParquetIndex(samples, location, image, in_struct)


IndexRow = tuple[int, Any, Any]
"""(row inside its group, key value, label value) of a row the index lists."""


class RowsInDoubt(ValueError):
    """pyarrow would read a row group with rows out of place."""


def _trust_pyarrow(path: Path, parquet: Any, group: int, columns: list[str | None]) -> None:
    """Raise RowsInDoubt when pyarrow would read a column of the group with rows out of place
    (a page of an unknown type, skipped without an error): the caller reads it page by page."""
    for column in columns:
        doubt = misplaced_rows(path, parquet, group, column) if column else None
        if doubt is not None:
            raise RowsInDoubt(f"row group {group} is not read whole: {doubt}")


def _index_rows(
    parquet: Any, group: int, key_column: str | None, label_column: str | None
) -> list[IndexRow]:
    columns = [c for c in (key_column, label_column) if c is not None]
    if not columns:
        return [(j, None, None) for j in range(parquet.metadata.row_group(group).num_rows)]
    rows: list[IndexRow] = []
    for batch in parquet.iter_batches(PARQUET_BATCH_ROWS, row_groups=[group], columns=columns):
        keys = batch.column(key_column).to_pylist() if key_column else None
        labels = batch.column(label_column).to_pylist() if label_column else None
        rows.extend(
            (len(rows), keys[j] if keys else None, labels[j] if labels else None)
            for j in range(batch.num_rows)
        )
    return rows


def _salvaged_index_rows(
    path: Path, parquet: Any, group: int, columns: tuple[str | None, str | None], exc: Exception
) -> list[IndexRow]:
    """The rows of a group pyarrow failed on, its key and label columns read page by page: a
    row whose key or label page is damaged is left out of the listing (logged with the
    reason); a column that cannot be read so fails the shard as before."""
    every = set(range(parquet.metadata.row_group(group).num_rows))
    read: list[dict[int, Any]] = []
    for column in columns:
        if column is None:
            read.append({})
            continue
        try:
            cells = dict(salvage_cells(path, parquet, group, column, every, _salvage_bound()))
        except Unsalvageable as why:
            raise ShardError(
                f"shard {path.name!r}: row group {group} does not read ({exc}), nor page by "
                f"page: {why}"
            ) from None
        string = _is_string(parquet.schema_arrow.field(column).type)
        read.append({row: _text_of(cell, string) for row, cell in cells.items()})
    keys, labels = read
    failed = {str(c) for c in (*keys.values(), *labels.values()) if isinstance(c, Exception)}
    for reason in sorted(failed):
        log.warning("not listed: %s", reason)
    return [
        (row, keys.get(row), labels.get(row))
        for row in sorted(every)
        if not isinstance(keys.get(row), Exception) and not isinstance(labels.get(row), Exception)
    ]


def _is_string(kind: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _text_of(cell: object, string: bool) -> object:
    """A salvaged value as pyarrow gives it: text for a string column."""
    if string and isinstance(cell, bytes):
        return cell.decode("utf-8", "replace")
    return cell


def _salvage_bound() -> int:
    """The largest column chunk read whole page by page: a row group's image bound (see
    `_batch_rows`), with room for page headers and pages that do not compress."""
    return 2 * PARQUET_GROUP_IMAGES * limits.current().max_image_bytes + (1 << 20)


def _label_text(value: Any, names: list[str] | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and names is not None and 0 <= value < len(names):
        return names[value]
    return str(value)


def _batch_rows(parquet: Any, group: int, image_column: str) -> int | Exception:
    """Rows per record batch that keep a batch within PARQUET_BATCH_IMAGES images at the bound,
    or why the row group is not read at all; from the footer alone, before anything inflates.

    Reading a row group holds its image column's pages (at most its uncompressed size), and
    no one value is larger than that (a value lies in one page, or in the dictionary page), so
    a batch of n rows holds at most n times that, even when a dictionary repeats one value."""
    meta = parquet.metadata.row_group(group)
    size = sum(
        meta.column(c).total_uncompressed_size
        for c in range(meta.num_columns)
        if meta.column(c).path_in_schema.split(".")[0] == image_column
    )
    bound = limits.current().max_image_bytes
    if size > PARQUET_GROUP_IMAGES * bound:
        return limits.ImageTooLarge(
            f"row group {group} holds {size:,} bytes of images, over "
            f"{PARQUET_GROUP_IMAGES} x the image-size bound of {bound:,} bytes (maxact serve "
            "--max-image-bytes); its rows are skipped unread: write smaller row groups"
        )
    rows: int = max(1, min(PARQUET_BATCH_ROWS, PARQUET_BATCH_IMAGES * bound // max(size, 1)))
    return rows


def _group_cells(
    path: Path, parquet: Any, index: _ParquetIndex, group: int, rows: set[int]
) -> Iterator[tuple[int, bytes | Exception]]:
    """(row inside the group, image bytes or why not) of `rows`, in row order. A row group over
    the bound is not read. When pyarrow fails on a page (corrupt, truncated, a bad checksum),
    the rest of the group is read again page by page (`parquet_salvage`): a damaged page skips
    only its own rows, with the reason. A chunk that reader cannot take (a codec or layout it
    does not decode) skips the rows from the failed batch on, those before the damaged page
    read again one row at a time (see docs/operating.md); when pyarrow cannot be trusted to keep
    the rows in place, none of the group's rows is read with it."""
    batch_rows = _batch_rows(parquet, group, index.image_column)
    if isinstance(batch_rows, Exception):
        yield from ((row, batch_rows) for row in sorted(rows))
        return
    done = [0]  # rows of the group read so far
    leaf = f"{index.image_column}.bytes" if index.image_in_struct else index.image_column
    try:
        _trust_pyarrow(path, parquet, group, [leaf])
        yield from _cells_from(parquet, index, group, rows, batch_rows, done)
    except Exception as exc:  # pyarrow: OSError, ArrowInvalid, ... from a damaged page
        rest = {row for row in rows if row >= done[0]}
        try:
            salvaged = salvage_cells(path, parquet, group, leaf, rest, _salvage_bound())
        except Unsalvageable as why:
            unsalvageable = f"it cannot be read page by page: {why}"
        else:
            yield from ((row, _salvaged_cell(cell)) for row, cell in salvaged)
            return
        error: Exception = ValueError(f"{exc}; {unsalvageable}")
        if batch_rows > 1 and not isinstance(exc, RowsInDoubt):  # rows before the bad page
            try:
                yield from _cells_from(parquet, index, group, rows, 1, done)
            except Exception as again:
                error = ValueError(f"{again}; {unsalvageable}")
        yield from _damaged(group, rows, done[0], error)


def _salvaged_cell(cell: object) -> bytes | Exception:
    if isinstance(cell, Exception):
        return cell
    if not isinstance(cell, bytes) or not cell:
        return ValueError("the Parquet row holds no image bytes")
    return cell


def _cells_from(
    parquet: Any, index: _ParquetIndex, group: int, rows: set[int], batch_rows: int, done: list[int]
) -> Iterator[tuple[int, bytes | Exception]]:
    """The wanted cells from row `done[0]` of the group on, `done[0]` counting rows read."""
    inside = 0
    for batch in parquet.iter_batches(batch_rows, row_groups=[group], columns=[index.image_column]):
        column = batch.column(0)
        for j in range(batch.num_rows):
            if inside + j >= done[0] and inside + j in rows:
                yield inside + j, _cell(column[j], index.image_in_struct)
        inside += batch.num_rows
        done[0] = max(done[0], inside)


def _damaged(
    group: int, rows: set[int], first: int, exc: Exception
) -> Iterator[tuple[int, Exception]]:
    failed = ValueError(f"row group {group} of the shard is damaged from row {first} on: {exc}")
    yield from ((row, failed) for row in sorted(rows) if row >= first)


def _cell(scalar: Any, in_struct: bool) -> bytes | Exception:
    """One cell's image bytes, its size checked before they are copied out of the batch."""
    if in_struct and scalar.is_valid:
        scalar = scalar["bytes"]
    buffer = scalar.as_buffer() if scalar.is_valid else None
    if buffer is None or buffer.size == 0:
        return ValueError("the Parquet row holds no image bytes")
    too_large = limits.image_bytes_error(buffer.size, "the Parquet cell")
    return too_large if too_large is not None else bytes(buffer.to_pybytes())


def _parquet_stream(path: Path, wanted: dict[str, int]) -> Iterator[Item]:
    """The wanted keys, one row group and one record batch in memory at a time."""
    index = _parquet_index(*_index_key(path))
    parquet = _parquet_file(path)
    keys_by_place = {index.location[key]: key for key in wanted if key in index.location}
    for group in sorted({group for group, _ in keys_by_place}):
        rows = {row for g, row in keys_by_place if g == group}
        for row, data in _group_cells(path, parquet, index, group, rows):
            key = keys_by_place[(group, row)]
            yield wanted[key], key, data


def _parquet_read(path: Path, key: str) -> bytes:
    index = _parquet_index(*_index_key(path))
    if key not in index.location:
        raise FileNotFoundError(f"no image {key!r} in shard {path.name!r}")
    group, row = index.location[key]
    parquet = _parquet_file(path)
    for _, data in _group_cells(path, parquet, index, group, {row}):
        if isinstance(data, Exception):
            raise data
        return data
    raise FileNotFoundError(f"no image {key!r} in shard {path.name!r}")


# -- sources -------------------------------------------------------------------------------


def shard_source(root: Path, index: int, image_id: str) -> ImageSource:
    """One sample, read on demand through the shard's index (for cropping a patch)."""
    located = shard_of(root, image_id)
    if located is None:
        raise FileNotFoundError(f"{image_id!r} is not a sample of a shard")
    path, key = located
    read = _tar_read if path.suffix.lower() == TAR_SUFFIX else _parquet_read
    return ImageSource(index, image_id, lambda: open_bytes(read(path, key)))


def stream_shard_sources(
    root: Path,
    ids: Sequence[str],
    indices: Sequence[int],
    cache: DatasetInputCache | None = None,
) -> Iterator[ImageSource]:
    """Sources of `ids` (dataset indices `indices`), reading each shard once front to back.

    Ids must be in dataset order (shard by shard); an id missing from its shard comes out as
    a source that fails to open (the scan reports it skipped), and so do the samples a shard
    could not give (the reason its reader gave: a damaged or truncated shard). With `cache`,
    a sample's decoded input is cached keyed on its id and its shard file (a rewritten shard
    is decoded again).
    """
    pairs = list(zip(indices, ids, strict=True))
    for shard, group in groupby(pairs, key=lambda pair: pair[1].partition("/")[0]):
        members = list(group)
        path = root / shard
        wanted = {image_id.partition("/")[2]: index for index, image_id in members}
        stream = _tar_stream if path.suffix.lower() == TAR_SUFFIX else _parquet_stream
        samples = _guarded(stream(path, wanted), path.name)
        # the shard yields the wanted samples in its own order, which is the dataset order:
        # normally one sample is held at a time
        arrived: dict[int, bytes | Exception] = {}
        broken: Exception | None = None
        for index, image_id in members:
            while index not in arrived and broken is None:
                item = next(samples, None)
                if item is None:
                    break
                if isinstance(item, Exception):
                    broken = item
                    break
                arrived[item[0]] = item[2]
            data = arrived.pop(index, broken or _vanished(image_id))
            if isinstance(data, Exception):
                yield failing_source(index, image_id, data)
            else:
                opener = partial(open_bytes, data)
                yield ImageSource(index, image_id, opener, path if cache else None, cache)


def _guarded(items: Iterator[Item], shard: str) -> Iterator[Item | Exception]:
    """The stream's items, then (if the shard breaks off) the error as its last item."""
    try:
        yield from items
    except Exception as exc:  # tarfile, pyarrow, OSError: the shard is damaged from here on
        yield ValueError(f"shard {shard!r} breaks off: {exc}")


def _vanished(image_id: str) -> Exception:
    return FileNotFoundError(f"sample {image_id!r} is no longer in its shard")
