"""Reading the pages of a Parquet column chunk that pyarrow gave up on, so that a damaged data
page loses only its own rows.

pyarrow decodes a column chunk's pages in sequence and fails the rest of the row group at the
first bad one; its Python API has no page reader. This reader walks the chunk itself: each
page header (Thrift compact, `parquet_thrift`), the page's checksum when the writer wrote one,
decompression through `pyarrow.Codec`, definition levels (RLE/bit-packed hybrid) and BYTE_ARRAY
values (PLAIN or dictionary indices), for data pages v1 and v2. It reads flat BYTE_ARRAY
columns (a binary or string column, or the `bytes` leaf of a {bytes, path} struct) and flat
INT32/INT64 ones (integer labels): one level per row.

A page whose header, checksum, decompression or decoding fails skips its rows with the reason,
and reading resumes at the next page. A header that does not parse hides where the next page
starts: the walk resynchronises on the first later offset from which a chain of well-formed
headers ends exactly at the chunk's end, and the rows in between are skipped. Whatever leaves
the rows' places in doubt (the pages' rows do not add up to the footer's) is `Unsalvageable`.
"""

from __future__ import annotations

import re
import zlib
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maxact.server import limits
from maxact.server.data.parquet_thrift import (
    DATA_PAGE,
    DATA_PAGE_V2,
    DICTIONARY_PAGE,
    PageHeader,
    ThriftError,
    read_page_header,
    read_varint,
)

PLAIN, PLAIN_DICTIONARY, RLE, RLE_DICTIONARY = 0, 2, 3, 8
CODECS = {
    "UNCOMPRESSED": None,
    "SNAPPY": "snappy",
    "GZIP": "gzip",
    "BROTLI": "brotli",
    "ZSTD": "zstd",
    "LZ4_RAW": "lz4_raw",
    "LZ4": "lz4_raw",  # pyarrow names LZ4_RAW so; the older Hadoop framing fails per page
}
MAX_RESYNC_CANDIDATES = 4096  # offsets tried after a header that does not parse
# a data page header starts with field 1 (type: DATA_PAGE or DATA_PAGE_V2), then field 2
_DATA_PAGE_START = re.compile(rb"\x15[\x00\x06]\x15")

Cell = bytes | int | None | Exception
"""A row's value (None: null), or why its page could not be read."""
WIDTHS = {"INT32": 4, "INT64": 8}
HEADER_WINDOW = 4096  # bytes read at a page's offset to parse its header
MAX_HEADER_BYTES = 1 << 20  # a longer header is taken as damaged


class Unsalvageable(ValueError):
    """The column chunk cannot be read page by page (a type, codec or layout this reader does
    not decode, or pages whose rows do not add up): the caller keeps its coarser fallback."""


class PageError(ValueError):
    """One page cannot be read; its rows are skipped with this reason."""


@dataclass(frozen=True)
class _Chunk:
    """One column chunk's bytes and what decoding them needs from the footer."""

    data: bytes
    codec: str | None
    physical: str  # BYTE_ARRAY, INT32 or INT64
    max_definition: int
    rows: int  # rows of the row group
    max_uncompressed: int  # the chunk's uncompressed size: no page inflates past it


@dataclass(frozen=True)
class _Page:
    offset: int  # of its header, inside the chunk
    header: PageHeader | None  # None: a gap (headers that did not parse) up to `end`
    body: int  # where its data starts
    end: int
    why: str = ""

    @property
    def rows(self) -> int:
        header = self.header
        if header is None or header.kind not in (DATA_PAGE, DATA_PAGE_V2):
            return 0
        return header.num_rows if header.num_rows is not None else header.num_values


def salvage_cells(
    path: Path, parquet: Any, group: int, column: str, rows: set[int], bound: int
) -> Iterator[tuple[int, Cell]]:
    """(row, its value or why not) for each of `rows` of row group `group`, in row order,
    reading column `column` (a leaf path such as `image` or `image.bytes`) page by page; a
    column chunk over `bound` bytes is not read, nor a BYTE_ARRAY value over the image bound.
    Raises Unsalvageable before yielding anything when the chunk cannot be read so."""
    chunk = _load_chunk(path, parquet, group, column, bound)
    pages = _walk(chunk)
    if any(page.header is None for page in pages):
        pages = _doubting(chunk, pages)
    placed = _place(pages, chunk.rows)
    return _cells(chunk, placed, rows, f"shard {path.name!r}, row group {group}")


def _load_chunk(path: Path, parquet: Any, group: int, column: str, bound: int) -> _Chunk:
    leaves = [parquet.schema.column(j) for j in range(parquet.metadata.num_columns)]
    found = [j for j, leaf in enumerate(leaves) if leaf.path == column]
    if not found:
        raise Unsalvageable(f"no column {column!r} in the file's schema")
    leaf, meta = leaves[found[0]], parquet.metadata.row_group(group).column(found[0])
    physical = leaf.physical_type
    if (physical != "BYTE_ARRAY" and physical not in WIDTHS) or leaf.max_repetition_level > 0:
        raise Unsalvageable(
            f"column {column!r} is {physical} with repetition level "
            f"{leaf.max_repetition_level}: only flat BYTE_ARRAY, INT32 and INT64 columns are "
            "read page by page"
        )
    if meta.compression not in CODECS:
        raise Unsalvageable(f"the {meta.compression} codec is not read page by page")
    start, size = _chunk_bytes(meta)
    inflated = meta.total_uncompressed_size
    if start < 4 or size <= 0 or start + size > path.stat().st_size or max(size, inflated) > bound:
        raise Unsalvageable(
            f"the column chunk at byte {start:,} of {size:,} bytes ({inflated:,} uncompressed) "
            f"is outside the file or over {bound:,} bytes"
        )
    with path.open("rb") as handle:
        handle.seek(start)
        data = handle.read(size)
    return _Chunk(
        data,
        CODECS[meta.compression],
        physical,
        leaf.max_definition_level,
        parquet.metadata.row_group(group).num_rows,
        meta.total_uncompressed_size,
    )


def _chunk_bytes(meta: Any) -> tuple[int, int]:
    """(where a column chunk's first page starts in the file, its compressed size)."""
    start = meta.data_page_offset
    if meta.has_dictionary_page and 0 < meta.dictionary_page_offset < start:
        start = meta.dictionary_page_offset
    return start, meta.total_compressed_size


def misplaced_rows(path: Path, parquet: Any, group: int, column: str) -> str | None:
    """Why pyarrow's reading of a column chunk cannot be trusted to keep its rows in place
    (None: it can). pyarrow skips a page of a type it does not know without an error: the
    row group then reads short and every later row takes another row's place. Only the page
    headers are read (a window at each page's offset), so this costs one small read a page."""
    leaves = [parquet.schema.column(j) for j in range(parquet.metadata.num_columns)]
    found = [j for j, leaf in enumerate(leaves) if leaf.path == column]
    if not found or leaves[found[0]].max_repetition_level > 0:
        return None  # a repeated column's values are not its rows: pyarrow's own check holds
    start, size = _chunk_bytes(parquet.metadata.row_group(group).column(found[0]))
    expected = parquet.metadata.row_group(group).num_rows
    counted, pos = 0, 0
    with path.open("rb") as handle:
        while pos < size:
            try:
                header, body = _header_from_file(handle, start + pos, size - pos)
            except ThriftError as exc:
                return f"the page header at byte {pos:,} of column {column!r} does not parse: {exc}"
            if header.kind not in (DATA_PAGE, DATA_PAGE_V2, DICTIONARY_PAGE):
                return f"column {column!r} has a page of unknown type {header.kind} at byte {pos:,}"
            if header.kind != DICTIONARY_PAGE:
                counted += header.num_rows if header.num_rows is not None else header.num_values
            pos += body + header.compressed_size
    if pos != size or counted != expected:
        return (
            f"the pages of column {column!r} hold {counted:,} rows in {pos:,} bytes where the "
            f"footer says {expected:,} rows in {size:,} bytes"
        )
    return None


def _header_from_file(handle: Any, at: int, left: int) -> tuple[PageHeader, int]:
    """The page header at byte `at` of the open file and its length, read in a window that
    grows while the header runs past it (statistics can make a header long)."""
    window = min(HEADER_WINDOW, left)
    while True:
        handle.seek(at)
        data = handle.read(window)
        try:
            return read_page_header(data, 0)
        except ThriftError:
            if window >= min(left, MAX_HEADER_BYTES) or len(data) < window:
                raise
            window = min(window * 16, left, MAX_HEADER_BYTES)


# -- walking the pages -----------------------------------------------------------------------


def _header_at(chunk: _Chunk, pos: int) -> _Page:
    """The page whose header starts at `pos`; ThriftError when it is not one."""
    header, body = read_page_header(chunk.data, pos)
    end = body + header.compressed_size
    if end > len(chunk.data):
        raise ThriftError(
            f"a page of {header.compressed_size:,} bytes runs past the end of the column chunk"
        )
    if header.kind not in (DATA_PAGE, DATA_PAGE_V2, DICTIONARY_PAGE):
        raise ThriftError(f"a page of type {header.kind} in a column chunk of data")
    if max(header.num_values, header.num_rows or 0) > chunk.rows and header.kind != DICTIONARY_PAGE:
        raise ThriftError(f"a page of {header.num_values:,} values in a group of {chunk.rows:,}")
    return _Page(pos, header, body, end)


def _chains_to_end(chunk: _Chunk, pos: int, known: dict[int, bool]) -> bool:
    """Whether well-formed page headers lead from `pos` exactly to the chunk's end. `known`
    remembers the answer for every offset a chain passed through, so that each offset is
    parsed at most once however many candidates are tried."""
    visited: list[int] = []
    answer = True
    while pos < len(chunk.data) and pos not in known:
        visited.append(pos)
        try:
            pos = _header_at(chunk, pos).end
        except ThriftError:
            answer = False
            break
    answer = answer and known.get(pos, pos == len(chunk.data))
    known.update((offset, answer) for offset in visited)
    return answer


def _resync(chunk: _Chunk, after: int, known: dict[int, bool]) -> int:
    """The first offset past `after` where a chain of headers reaches the end (or the end)."""
    for tried, match in enumerate(_DATA_PAGE_START.finditer(chunk.data, after + 1)):
        if tried >= MAX_RESYNC_CANDIDATES:
            break
        if _chains_to_end(chunk, match.start(), known):
            return match.start()
    return len(chunk.data)


def _walk(chunk: _Chunk) -> list[_Page]:
    """The chunk's pages in order; a stretch whose headers do not parse is one gap page."""
    pages: list[_Page] = []
    pos = 0
    known: dict[int, bool] = {}
    while pos < len(chunk.data):
        try:
            page = _header_at(chunk, pos)
        except ThriftError as exc:
            resumed = _resync(chunk, pos, known)
            page = _Page(pos, None, pos, resumed, f"the page header does not parse: {exc}")
        pages.append(page)
        pos = page.end
    return pages


def _doubting(chunk: _Chunk, pages: list[_Page]) -> list[_Page]:
    """`pages` with each data page that does not decode made a gap: once a header did not
    parse, only the pages that decode vouch for the row counts their headers claim (no
    checksum covers a header), so rows are never placed after a count that might lie."""
    doubted: list[_Page] = []
    dictionary: list[Cell] | PageError | None = None
    for page in pages:
        header = page.header
        if header is not None and header.kind == DICTIONARY_PAGE:
            dictionary = _dictionary(chunk, page)
        elif header is not None:
            try:
                _data_page(chunk, page, dictionary)
            except (PageError, ValueError) as exc:
                page = _Page(
                    page.offset, None, page.body, page.end, f"a page does not decode: {exc}"
                )
        doubted.append(page)
    return doubted


def _place(pages: list[_Page], total: int) -> list[tuple[_Page, int, int]]:
    """(page, first row, rows) of each page. Rows before the first gap count from the front,
    rows after the last gap from the back; a gap holds the rest (with any pages between gaps,
    whose rows cannot be placed and are skipped with the gap)."""
    gaps = [i for i, page in enumerate(pages) if page.header is None]
    front = pages if not gaps else pages[: gaps[0]]
    back = [] if not gaps else pages[gaps[-1] + 1 :]
    before, after = sum(p.rows for p in front), sum(p.rows for p in back)
    if (not gaps and before != total) or before + after > total:
        raise Unsalvageable(
            f"its pages hold {before + after:,} rows where the footer says {total:,}"
        )
    placed: list[tuple[_Page, int, int]] = []
    row = 0
    for page in front:
        placed.append((page, row, page.rows))
        row += page.rows
    if gaps:
        middle = pages[gaps[0] : gaps[-1] + 1]
        why = "; ".join(p.why for p in middle if p.header is None)
        gap = _Page(middle[0].offset, None, middle[0].offset, middle[-1].end, why)
        placed.append((gap, row, total - before - after))
        row = total - after
    for page in back:
        placed.append((page, row, page.rows))
        row += page.rows
    return placed


# -- decoding the pages ----------------------------------------------------------------------


def _cells(
    chunk: _Chunk, placed: list[tuple[_Page, int, int]], rows: set[int], where: str
) -> Iterator[tuple[int, Cell]]:
    """The wanted rows' cells, page by page; data pages are numbered from 0 in the reasons (a
    stretch of unreadable headers counts as one)."""
    dictionary: list[Cell] | PageError | None = None
    number = -1
    ordered = sorted(rows)
    for page, first, count in placed:
        header = page.header
        if header is not None and header.kind == DICTIONARY_PAGE:
            dictionary = _dictionary(chunk, page)
            continue
        number += 1
        wanted = ordered[bisect_left(ordered, first) : bisect_left(ordered, first + count)]
        if not wanted:
            continue
        try:
            if header is None:
                raise PageError(page.why)
            values = _data_page(chunk, page, dictionary)
        except (PageError, ValueError) as exc:
            failed = PageError(
                f"{where}, data page {number} (at byte {page.offset:,} of the column chunk) "
                f"does not decode: {exc}; its rows {first}-{first + count - 1} are skipped"
            )
            yield from ((row, failed) for row in wanted)
            continue
        yield from ((row, values[row - first]) for row in wanted)


def _payload(chunk: _Chunk, page: _Page, skip: int = 0, compressed: bool = True) -> bytes:
    """The page's data from byte `skip` on, checksum verified and decompressed."""
    header = page.header
    assert header is not None
    raw = chunk.data[page.body : page.end]
    if header.crc is not None and zlib.crc32(raw) != header.crc & 0xFFFFFFFF:
        raise PageError("its checksum does not match its data")
    size = header.uncompressed_size - skip
    if size < 0 or size > chunk.max_uncompressed:
        raise PageError(f"it claims {header.uncompressed_size:,} bytes uncompressed")
    if chunk.codec is None or not compressed:
        if len(raw) - skip != size:
            raise PageError(f"it holds {len(raw) - skip:,} bytes where it claims {size:,}")
        return raw[skip:]
    import pyarrow as pa

    try:
        out = pa.Codec(chunk.codec).decompress(raw[skip:], decompressed_size=size, asbytes=True)
    except Exception as exc:  # pyarrow: OSError, ArrowInvalid from a damaged stream
        raise PageError(f"it does not decompress: {exc}") from None
    return bytes(out)


def _dictionary(chunk: _Chunk, page: _Page) -> list[Cell] | PageError:
    """The dictionary page's values, or why the pages that index it cannot be read."""
    header = page.header
    assert header is not None
    try:
        if header.encoding not in (PLAIN, PLAIN_DICTIONARY):
            raise PageError(f"dictionary encoding {header.encoding} is not read")
        return _plain(_payload(chunk, page), header.num_values, chunk.physical)
    except (PageError, ValueError) as exc:
        return PageError(f"its dictionary page does not decode: {exc}")


def _data_page(chunk: _Chunk, page: _Page, dictionary: list[Cell] | PageError | None) -> list[Cell]:
    """One cell per row of a data page (v1 or v2)."""
    header = page.header
    assert header is not None
    count, width = header.num_values, chunk.max_definition.bit_length()
    if header.kind == DATA_PAGE_V2:
        if header.num_rows != count or header.repetition_levels_length:
            raise PageError("repeated values in a flat column")
        skip = header.definition_levels_length
        if page.body + skip > page.end:
            raise PageError("its levels run past the page")
        levels_data = chunk.data[page.body : page.body + skip]
        values = _payload(chunk, page, skip, header.is_compressed)
        levels = rle_hybrid(levels_data, width, count) if width else None
    else:
        data = _payload(chunk, page)
        levels, values = None, data
        if width:
            if header.definition_level_encoding != RLE:
                raise PageError(f"level encoding {header.definition_level_encoding} is not read")
            length = int.from_bytes(data[:4], "little")
            if len(data) < 4 or 4 + length > len(data):
                raise PageError("its definition levels run past the page")
            levels = rle_hybrid(data[4 : 4 + length], width, count)
            values = data[4 + length :]
    present = count if levels is None else int(np.count_nonzero(levels == chunk.max_definition))
    decoded = _values(values, header.encoding, present, dictionary, chunk.physical)
    if levels is None:
        return decoded
    found = iter(decoded)
    return [next(found) if level == chunk.max_definition else None for level in levels]


def _values(
    data: bytes,
    encoding: int,
    count: int,
    dictionary: list[Cell] | PageError | None,
    physical: str,
) -> list[Cell]:
    if encoding == PLAIN:
        return _plain(data, count, physical)
    if encoding not in (PLAIN_DICTIONARY, RLE_DICTIONARY):
        raise PageError(f"value encoding {encoding} is not read page by page")
    if isinstance(dictionary, PageError):
        raise dictionary
    if dictionary is None:
        raise PageError("dictionary indices without a dictionary page")
    if count and (not data or data[0] > 32):
        raise PageError("a dictionary index width over 32 bits")
    indices = rle_hybrid(data[1:], data[0], count) if count else np.zeros(0, np.int64)
    if indices.size and int(indices.max()) >= len(dictionary):
        raise PageError(f"a dictionary index past its {len(dictionary)} entries")
    return [dictionary[i] for i in indices.tolist()]


def _plain(data: bytes, count: int, physical: str) -> list[Cell]:
    """PLAIN values: integers, or BYTE_ARRAY ones, each a 4-byte little-endian length and the
    bytes (one over the image bound is not copied). The values must fill the data exactly."""
    if physical in WIDTHS:
        if len(data) != count * WIDTHS[physical]:
            raise PageError(f"{len(data):,} bytes for {count:,} {physical} values")
        integers: list[int] = np.frombuffer(data, f"<i{WIDTHS[physical]}", count).tolist()
        return list(integers)
    cells: list[Cell] = []
    pos = 0
    if count > len(data) // 4:
        raise PageError(f"{count:,} values in {len(data):,} bytes")
    for _ in range(count):
        length = int.from_bytes(data[pos : pos + 4], "little")
        if pos + 4 + length > len(data):
            raise PageError("a value runs past the end of its page")
        too_large = limits.image_bytes_error(length, "the Parquet cell")
        cells.append(too_large or data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    if pos != len(data):
        raise PageError(f"{len(data) - pos:,} bytes left after its {count:,} values")
    return cells


def rle_hybrid(data: bytes, width: int, count: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """`count` values of the RLE/bit-packed hybrid encoding, `width` bits each, which must
    fill `data` exactly: a page whose header claims a wrong count does not decode."""
    if width == 0:
        return np.zeros(count, np.int64)
    pieces: list[np.ndarray[Any, np.dtype[np.int64]]] = []
    have, pos, weights = 0, 0, np.int64(1) << np.arange(width, dtype=np.int64)
    while have < count:
        try:
            head, pos = read_varint(data, pos)
        except ThriftError as exc:
            raise PageError(f"{count - have:,} levels or indices missing: {exc}") from None
        if head & 1:  # bit-packed: groups of 8 values
            size = (head >> 1) * width
            if not size or pos + size > len(data):
                raise PageError("a bit-packed run runs past its data")
            bits = np.unpackbits(np.frombuffer(data, np.uint8, size, pos), bitorder="little")
            piece = bits.reshape(-1, width).astype(np.int64) @ weights
            pos += size
        else:  # a run of one value
            size = (width + 7) // 8
            if not head >> 1 or pos + size > len(data):
                raise PageError("an RLE run runs past its data")
            if head >> 1 > count - have:
                raise PageError(f"a run of {head >> 1:,} values where {count - have:,} are left")
            value = int.from_bytes(data[pos : pos + size], "little")
            piece = np.full(head >> 1, value, np.int64)
            pos += size
        if piece.size - (count - have) >= 8:
            raise PageError(f"a bit-packed run of {piece.size:,} values past the page's {count:,}")
        piece = piece[: count - have]
        pieces.append(piece)
        have += piece.size
    if pos != len(data):
        raise PageError(f"{len(data) - pos:,} bytes left after its {count:,} levels or indices")
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
