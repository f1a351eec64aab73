"""Parquet page headers, read from the Thrift compact protocol the format stores them in.

pyarrow reads pages but exposes no page reader, so salvaging the pages after a damaged one
(`parquet_salvage`) walks the headers itself. Only `PageHeader` and the three page-kind headers
inside it are decoded; every other field (statistics, lists, maps) is skipped without copying.
Every length is checked against the bytes at hand before anything is read, and nesting is
bounded, so a damaged header is a `ThriftError`, never a large allocation or deep recursion.
"""

from __future__ import annotations

from dataclasses import dataclass

_STOP, _TRUE, _FALSE, _I8, _I16, _I32, _I64, _DOUBLE, _BINARY = range(9)
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12
_MAX_DEPTH = 8

DATA_PAGE, INDEX_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 1, 2, 3


class ThriftError(ValueError):
    """The bytes are not a well-formed compact-protocol struct."""


@dataclass(frozen=True)
class PageHeader:
    """What the salvage reader needs of a page header (parquet.thrift `PageHeader`)."""

    kind: int
    uncompressed_size: int
    compressed_size: int
    crc: int | None
    num_values: int  # levels in a data page (rows of a flat column), entries in a dictionary
    num_rows: int | None  # data page v2 only
    encoding: int
    definition_level_encoding: int  # data page v1
    definition_levels_length: int  # data page v2: bytes of levels before the values
    repetition_levels_length: int  # data page v2
    is_compressed: bool  # data page v2: whether the values are compressed


class _Reader:
    def __init__(self, data: bytes | memoryview, pos: int) -> None:
        self.data, self.pos = data, pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ThriftError("the header runs past the end of the column chunk")
        value = self.data[self.pos]
        self.pos += 1
        return int(value)

    def varint(self) -> int:
        result = 0
        for shift in range(0, 70, 7):
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
        raise ThriftError("a varint longer than 10 bytes")

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def skip(self, count: int) -> None:
        if count < 0 or self.pos + count > len(self.data):
            raise ThriftError(f"a field of {count:,} bytes runs past the end of the column chunk")
        self.pos += count

    def value(self, kind: int, depth: int) -> object:
        """One value of compact type `kind`: ints and structs are returned, the rest skipped."""
        if kind in (_TRUE, _FALSE):
            return kind == _TRUE
        if kind == _I8:
            return self.byte()
        if kind in (_I16, _I32, _I64):
            return self.zigzag()
        if kind == _DOUBLE:
            self.skip(8)
        elif kind == _BINARY:
            self.skip(self.varint())
        elif kind in (_LIST, _SET):
            self._skip_list(depth)
        elif kind == _MAP:
            self._skip_map(depth)
        elif kind == _STRUCT:
            return self.struct(depth + 1)
        else:
            raise ThriftError(f"unknown compact type {kind}")
        return None

    def _skip_list(self, depth: int) -> None:
        head = self.byte()
        size, kind = head >> 4, head & 0x0F
        if size == 15:
            size = self.varint()
        for _ in range(self._bounded(size)):
            if kind in (_TRUE, _FALSE):
                self.byte()  # a bool in a list is one byte
            else:
                self.value(kind, depth)

    def _skip_map(self, depth: int) -> None:
        size = self.varint()
        if size:
            kinds = self.byte()
            for _ in range(self._bounded(size)):
                self.value(kinds >> 4, depth)
                self.value(kinds & 0x0F, depth)

    def _bounded(self, size: int) -> int:
        if size > len(self.data) - self.pos:  # every element takes at least one byte
            raise ThriftError(f"a collection of {size:,} elements in fewer bytes")
        return size

    def struct(self, depth: int = 0) -> dict[int, object]:
        """A struct's fields by id (ints, bools and nested structs; others are None)."""
        if depth > _MAX_DEPTH:
            raise ThriftError("structs nested too deep")
        fields: dict[int, object] = {}
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == _STOP:
                return fields
            delta = head >> 4
            last = last + delta if delta else self.zigzag()
            fields[last] = self.value(kind, depth)


def _int(fields: dict[int, object], key: int, default: int | None = None) -> int:
    value = fields.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ThriftError(f"field {key} is missing or not an integer")
    return value


def _struct(fields: dict[int, object], key: int) -> dict[int, object]:
    value = fields.get(key)
    return value if isinstance(value, dict) else {}


def read_page_header(data: bytes | memoryview, pos: int) -> tuple[PageHeader, int]:
    """(the page header at `pos`, where its page data starts)."""
    reader = _Reader(data, pos)
    fields = reader.struct()
    kind = _int(fields, 1)
    sizes = _int(fields, 2), _int(fields, 3)
    if min(sizes) < 0:
        raise ThriftError(f"a negative page size {sizes}")
    crc = fields.get(4)
    v1, dictionary, v2 = _struct(fields, 5), _struct(fields, 7), _struct(fields, 8)
    page = {DATA_PAGE: v1, DICTIONARY_PAGE: dictionary, DATA_PAGE_V2: v2}.get(kind, {})
    if kind in (DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2) and not page:
        raise ThriftError(f"a page of type {kind} without its header")
    header = PageHeader(
        kind=kind,
        uncompressed_size=sizes[0],
        compressed_size=sizes[1],
        crc=crc if isinstance(crc, int) and not isinstance(crc, bool) else None,
        num_values=_int(page, 1, 0),
        num_rows=_int(v2, 3) if kind == DATA_PAGE_V2 else None,
        encoding=_int(page, 4 if kind == DATA_PAGE_V2 else 2, 0),
        definition_level_encoding=_int(v1, 3, 3),
        definition_levels_length=_int(v2, 5, 0),
        repetition_levels_length=_int(v2, 6, 0),
        is_compressed=v2.get(7, True) is not False,
    )
    counts = (header.num_values, header.num_rows or 0, header.definition_levels_length)
    if min(*counts, header.repetition_levels_length) < 0:
        raise ThriftError("a negative count in the page header")
    return header, reader.pos


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(the unsigned varint at `pos`, the position after it)."""
    reader = _Reader(data, pos)
    return reader.varint(), reader.pos
