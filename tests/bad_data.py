"""Damaged and hostile data on disk, built by the tests: tar members whose header claims more
than the file holds, Parquet files that inflate far past their size or lack a footer, labels
files that are not UTF-8, and names no dataset should hand out."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def png(value: int, size: int = 32) -> bytes:
    """A small PNG of one grey level (distinct values rank distinctly)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(size: int, seed: int = 0) -> bytes:
    """A PNG of random pixels: it does not compress, so its bytes grow with its size."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def tar_member(name: str, data: bytes) -> bytes:
    """One member as it sits in an archive: a PAX header, the data, padding to 512."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(format=tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % 512)


def write_tar(path: Path, members: Sequence[tuple[str, bytes]]) -> None:
    """A tar of exactly these member names (tarfile would refuse or rewrite some of them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(tar_member(n, d) for n, d in members) + b"\0" * 1024)


def write_tar_claiming(
    path: Path,
    before: Sequence[tuple[str, bytes]],
    claimed: int,
    after: Sequence[tuple[str, bytes]] = (),
    name: str = "huge.png",
) -> None:
    """A tar whose member `name` claims `claimed` bytes, stored as a hole (a sparse file: a
    10 GB claim costs a few KB of disk), between `before` and `after` members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = tarfile.TarInfo(name)
    info.size = claimed
    with path.open("wb") as handle:
        handle.write(b"".join(tar_member(n, d) for n, d in before))
        handle.write(info.tobuf(format=tarfile.PAX_FORMAT))
        handle.seek(claimed + (-claimed % 512), os.SEEK_CUR)
        handle.write(b"".join(tar_member(n, d) for n, d in after) + b"\0" * 1024)


def write_parquet(
    path: Path,
    keys: Sequence[str],
    cells: Sequence[bytes],
    row_group_size: int = 64,
    compression: str = "zstd",
    page_per_row: bool = False,
    struct: bool = False,
    **options: Any,
) -> None:
    """A plain `__key__` + binary `image` Parquet file (`page_per_row`: each row its own data
    page, as a writer with small pages gives for large images; `struct`: the image column a
    {bytes, path} struct; `options`: more of `pyarrow.parquet.write_table`'s)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    image = pa.array(cells, pa.binary())
    if struct:  # as Hugging Face writes images: {bytes, path}
        image = pa.StructArray.from_arrays(
            [image, pa.array([None] * len(cells), pa.string())], ["bytes", "path"]
        )
    table = pa.table({"__key__": list(keys), "image": image})
    pages: dict[str, Any] = (
        {"data_page_size": 1, "write_batch_size": 1, "write_statistics": False}
        if page_per_row
        else {}
    )
    pq.write_table(
        table,
        path,
        row_group_size=row_group_size,
        compression=compression,
        **({"use_dictionary": False} | pages | options),
    )


def write_parquet_repeating(path: Path, value_bytes: int, rows: int) -> None:
    """`rows` cells that all point at ONE dictionary value of `value_bytes` zero bytes: a few
    KB on disk, rows x value_bytes once read into a record batch (no Arrow schema is stored,
    so a reader sees a plain binary column, as pyarrow writes any repetitive one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    dictionary = pa.array([b"\0" * value_bytes], pa.binary())
    image = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), dictionary)
    keys = pa.array([f"big_{i:03d}" for i in range(rows)])
    table = pa.table({"__key__": keys, "image": image})
    pq.write_table(table, path, compression="zstd", store_schema=False)


def corrupt_row_group(path: Path, group: int) -> None:
    """Overwrite the first data page header of row group `group`'s image column with 0xFF."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata.row_group(group)
    column = next(
        meta.column(c) for c in range(meta.num_columns) if meta.column(c).path_in_schema == "image"
    )
    with path.open("r+b") as handle:
        handle.seek(column.data_page_offset)
        handle.write(b"\xff" * 24)


def data_pages(path: Path, group: int, column: str = "image") -> list[tuple[int, int, int, int]]:
    """(file offset of the header, of the page data, first row, rows) of each data page of one
    column chunk, walking the page headers (the footer does not list pages)."""
    import pyarrow.parquet as pq

    from maxact.server.data.parquet_thrift import DATA_PAGE, DATA_PAGE_V2, read_page_header

    parquet = pq.ParquetFile(path)
    leaves = [parquet.schema.column(j).path for j in range(parquet.metadata.num_columns)]
    meta = parquet.metadata.row_group(group).column(leaves.index(column))
    start = meta.dictionary_page_offset if meta.has_dictionary_page else meta.data_page_offset
    data = path.read_bytes()
    pages: list[tuple[int, int, int, int]] = []
    pos, row = start, 0
    while pos < start + meta.total_compressed_size:
        header, body = read_page_header(data, pos)
        if header.kind in (DATA_PAGE, DATA_PAGE_V2):
            rows = header.num_values if header.num_rows is None else header.num_rows
            pages.append((pos, body, row, rows))
            row += rows
        pos = body + header.compressed_size
    return pages


def corrupt_data_page(
    path: Path, group: int, page: int, part: str = "header", column: str = "image"
) -> range:
    """Overwrite 8 bytes of data page `page` of row group `group`'s `column` (its header, or
    the start of its data) with 0xFF; the rows of that page, inside the group."""
    header, body, first, rows = data_pages(path, group, column)[page]
    at = header if part == "header" else body
    data = bytearray(path.read_bytes())
    data[at : at + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return range(first, first + rows)


def without_footer(path: Path) -> None:
    """Cut the footer (its length and the closing magic) off a Parquet file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
