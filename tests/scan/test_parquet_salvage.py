"""The page-by-page Parquet reader used after pyarrow fails on a row group: on an undamaged
file it reads exactly what pyarrow reads (every codec, page version, dictionary on/off, nulls,
checksums, several pages per row group); on a file with one damaged data page it skips exactly
that page's rows and reads every other row byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxact.server import limits
from maxact.server.data.parquet_salvage import Cell, Unsalvageable, rle_hybrid, salvage_cells
from maxact.server.data.parquet_thrift import ThriftError, read_page_header
from tests.bad_data import data_pages

settings.register_profile(
    "salvage",
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CODECS = ["none", "snappy", "gzip", "zstd", "lz4", "brotli"]
BOUND = 1 << 24


@st.composite
def tables(draw: st.DrawFn) -> tuple[pa.Table, dict[str, object]]:
    """A key column and an image column (binary or a {bytes, path} struct), maybe with nulls
    and repeats, and writer options that give several pages per row group."""
    rows = draw(st.integers(1, 120))
    pool = draw(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8))
    nulls = draw(st.booleans())
    cells = [
        None if nulls and draw(st.integers(0, 5)) == 0 else draw(st.sampled_from(pool))
        for _ in range(rows)
    ]
    image = pa.array(cells, pa.binary())
    if draw(st.booleans()):
        image = pa.StructArray.from_arrays(
            [image, pa.array([None] * rows, pa.string())], ["bytes", "path"]
        )
    table = pa.table({"__key__": [f"k{i}" for i in range(rows)], "image": image})
    options = {
        "row_group_size": draw(st.integers(1, rows)),
        "data_page_size": draw(st.sampled_from([1, 64, 512, 1 << 20])),
        "write_batch_size": draw(st.sampled_from([1, 3, 16, 1024])),
        "compression": draw(st.sampled_from(CODECS)),
        "use_dictionary": draw(st.booleans()),
        "data_page_version": draw(st.sampled_from(["1.0", "2.0"])),
        "write_page_checksum": draw(st.booleans()),
        "write_statistics": draw(st.booleans()),
    }
    return table, options


def _write(path: Path, table: pa.Table, options: dict[str, object]) -> str:
    pq.write_table(table, path, **options)
    return "image.bytes" if pa.types.is_struct(table.schema.field("image").type) else "image"


def _write_images(path: Path, cells: list[bytes], **options: object) -> None:
    """A binary `image` column of `cells`, one row group, small pages (`options` override)."""
    pq.write_table(
        pa.table({"image": pa.array(cells, pa.binary())}),
        path,
        **(
            {
                "data_page_size": 1,
                "use_dictionary": False,
                "write_statistics": False,
                "compression": "snappy",
                "write_page_checksum": True,
            }
            | options
        ),
    )


def _expected(table: pa.Table, column: str) -> list[bytes | None]:
    image = table.column("image").combine_chunks()
    if column == "image.bytes":
        image = pa.array(
            [None if v is None else v["bytes"] for v in image.to_pylist()], pa.binary()
        )
    return [v if v else None for v in image.to_pylist()]


def _read_all(path: Path, column: str) -> list[Cell]:
    parquet = pq.ParquetFile(path)
    cells: list[Cell] = []
    for group in range(parquet.num_row_groups):
        rows = set(range(parquet.metadata.row_group(group).num_rows))
        cells.extend(cell for _, cell in salvage_cells(path, parquet, group, column, rows, BOUND))
    return cells


@settings(settings.get_profile("salvage"))
@given(case=tables())
def test_the_page_reader_reads_exactly_what_pyarrow_reads_from_an_undamaged_file(
    tmp_path: Path, case: tuple[pa.Table, dict[str, object]]
) -> None:
    table, options = case
    path = tmp_path / "p.parquet"
    column = _write(path, table, options)
    expected = _expected(pq.read_table(path), column)
    assert expected == _expected(table, column)
    got = _read_all(path, column)
    assert got == expected


@pytest.mark.parametrize("damage", ["header", "body"])
@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("dictionary", [False, True])
def test_one_damaged_data_page_skips_exactly_its_rows_and_every_other_row_is_intact(
    tmp_path: Path, damage: str, version: str, dictionary: bool
) -> None:
    cells = [bytes([i]) * (50 + i) for i in range(40)]
    table = pa.table(
        {"__key__": [f"k{i}" for i in range(40)], "image": pa.array(cells, pa.binary())}
    )
    path = tmp_path / "p.parquet"
    pq.write_table(
        table,
        path,
        row_group_size=40,
        data_page_size=200,
        write_batch_size=5,
        compression="snappy",
        use_dictionary=dictionary,
        data_page_version=version,
        write_page_checksum=True,
    )
    pages = data_pages(path, 0)
    assert len(pages) >= 4
    offset, _, first, count = pages[2]
    data = bytearray(path.read_bytes())
    header, body = read_page_header(bytes(data), offset)
    at, size = (offset, 8) if damage == "header" else (body, min(8, header.compressed_size))
    data[at : at + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    with pytest.raises(OSError):
        pq.read_table(path, page_checksum_verification=True)
    got = _read_all(path, "image")
    lost = set(range(first, first + count))
    assert {i for i, c in enumerate(got) if isinstance(c, Exception)} == lost
    assert all(got[i] == cells[i] for i in range(40) if i not in lost)
    reasons = {str(got[i]) for i in lost}
    assert len(reasons) == 1
    assert "row group 0, data page 2 " in reasons.pop()


def test_a_page_whose_rows_do_not_add_up_is_unsalvageable(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    table = pa.table({"image": pa.array([b"x" * 20] * 10, pa.binary())})
    pq.write_table(
        table, path, data_page_size=1, write_batch_size=1, use_dictionary=False, compression="none"
    )
    offset, _, _, _ = data_pages(path, 0)[1]
    data = bytearray(path.read_bytes())
    header, _ = read_page_header(bytes(data), offset)
    # field 5 (data_page_header) -> field 1 num_values: 1 (zigzag 2) becomes 2 (zigzag 4)
    found = re.compile(rb"[\x1c\x2c]\x15\x02").search(bytes(data), offset)
    assert found is not None
    data[found.start() + 2] = 4
    path.write_bytes(bytes(data))
    parquet = pq.ParquetFile(path)
    with pytest.raises(Unsalvageable, match="rows where the footer says 10"):
        list(salvage_cells(path, parquet, 0, "image", set(range(10)), BOUND))
    assert header.num_values == 1


def test_the_hybrid_decoder_reads_runs_and_bit_packed_groups() -> None:
    # a run of 5 threes (header 5<<1), then one bit-packed group of 8 values at width 2
    packed = bytes([0b11100100, 0b11100100])  # 0,1,2,3,0,1,2,3
    data = bytes([10, 3, (1 << 1) | 1]) + packed
    assert rle_hybrid(data, 2, 13).tolist() == [3] * 5 + [0, 1, 2, 3] * 2
    assert rle_hybrid(data, 2, 7).tolist() == [3] * 5 + [0, 1]


def test_a_damaged_dictionary_page_skips_the_rows_of_the_pages_that_index_it(
    tmp_path: Path,
) -> None:
    cells = [bytes([i % 3]) * 40 for i in range(20)]
    path = tmp_path / "p.parquet"
    _write_images(path, cells, write_batch_size=5, compression="zstd", use_dictionary=True)
    meta = pq.ParquetFile(path).metadata.row_group(0).column(0)
    assert meta.has_dictionary_page
    _, body = read_page_header(path.read_bytes(), meta.dictionary_page_offset)
    data = bytearray(path.read_bytes())
    data[body : body + 4] = b"\xff" * 4
    path.write_bytes(bytes(data))
    got = _read_all(path, "image")
    assert len(got) == 20
    assert all(isinstance(c, Exception) and "dictionary page" in str(c) for c in got), got


def test_a_cell_over_the_image_bound_is_an_error_and_is_not_copied(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    cells = [b"a" * 10, b"b" * 5000, b"c" * 10]
    pq.write_table(pa.table({"image": pa.array(cells, pa.binary())}), path, use_dictionary=False)
    before = limits.current()
    limits.configure(limits.Limits(max_image_bytes=1000))
    try:
        got = _read_all(path, "image")
    finally:
        limits.configure(before)
    assert got[0] == cells[0] and got[2] == cells[2]
    assert isinstance(got[1], limits.ImageTooLarge), got[1]


def test_two_damaged_headers_lose_the_rows_from_the_first_to_the_second_and_no_more(
    tmp_path: Path,
) -> None:
    """Rows between two unreadable headers cannot be placed (a header that does not parse
    hides its row count); rows before the first and after the second are read. 3,000 one-row
    pages: resynchronising parses each offset at most once, so this stays fast."""
    cells = [i.to_bytes(2, "little") * 4 for i in range(3000)]
    path = tmp_path / "p.parquet"
    _write_images(path, cells, write_batch_size=1, compression="none")
    pages = data_pages(path, 0)
    data = bytearray(path.read_bytes())
    for page in (2, 5):
        data[pages[page][0] : pages[page][0] + 3] = b"\xff" * 3
    path.write_bytes(bytes(data))
    got = _read_all(path, "image")
    assert [i for i, c in enumerate(got) if isinstance(c, Exception)] == [2, 3, 4, 5]
    assert all(got[i] == cells[i] for i in range(3000) if not 2 <= i <= 5)


@pytest.mark.parametrize("dictionary", [False, True])
def test_a_row_count_lie_before_an_unreadable_header_never_moves_rows_onto_other_keys(
    tmp_path: Path, dictionary: bool
) -> None:
    """No checksum covers a page header: page 0 claims 0 rows instead of 3 and page 5's header
    does not parse. Counting rows from the front would shift pages 1-4 onto the wrong rows;
    they are lost with the gap instead, and every row returned holds its own bytes."""
    cells = [bytes([i]) * (40 + i) for i in range(30)]
    path = tmp_path / "p.parquet"
    _write_images(path, cells, write_batch_size=3, use_dictionary=dictionary)
    pages = data_pages(path, 0)
    data = bytearray(path.read_bytes())
    found = re.compile(rb"[\x1c\x2c]\x15\x06").search(bytes(data), pages[0][0], pages[0][1])
    assert found is not None
    data[found.start() + 2] = 0  # num_values 3 (zigzag 6) -> 0
    data[pages[5][0] : pages[5][0] + 3] = b"\xff" * 3
    path.write_bytes(bytes(data))
    got = _read_all(path, "image")
    assert all(c == cells[i] for i, c in enumerate(got) if not isinstance(c, Exception))
    assert [i for i, c in enumerate(got) if isinstance(c, Exception)] == list(range(18))


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (b"\x19\xf5\xff\xff\xff\x0f", "elements in fewer bytes"),  # a list of 2**32 elements
        (b"\x18\xff\xff\xff\xff\x0f", "runs past the end"),  # a 4 GiB binary field
        (b"\x1c" * 20, "nested too deep"),
        (b"\x15\x00", "runs past the end"),  # no STOP
        (b"\x15\x00\x15\x01\x15\x02\x00", "negative page size"),
        (b"\x15\x00\x15\x02\x15\x02\x00", "without its header"),  # a data page, no data header
    ],
)
def test_a_malformed_page_header_is_a_thrift_error_never_an_allocation(
    header: bytes, why: str
) -> None:
    with pytest.raises(ThriftError, match=why):
        read_page_header(header, 0)


def test_a_page_of_unknown_type_that_pyarrow_skips_silently_moves_no_row(tmp_path: Path) -> None:
    """pyarrow skips a data page whose header names an unknown page type without an error,
    so the group reads short and later rows take earlier rows' places; the shard reader
    notices from the page headers and reads that group page by page: exactly the page's
    rows are skipped and every other row keeps its own image."""
    from maxact.server.data.shards import _parquet_stream

    path = tmp_path / "p.parquet"
    cells = [bytes([i]) * (50 + i) for i in range(8)]
    _write_images(path, cells, data_page_size=1, write_batch_size=2, write_statistics=False)
    pages = data_pages(path, 0)
    header = pages[1][0]
    data = bytearray(path.read_bytes())
    assert data[header : header + 2] == b"\x15\x00"  # field 1 (type): DATA_PAGE
    data[header + 1] = 0x0E  # type 7: unknown
    path.write_bytes(bytes(data))
    assert pq.ParquetFile(path).read_row_group(0, columns=["image"]).num_rows == 6  # silent
    first, rows = pages[1][2], pages[1][3]
    got = {key: data for _, key, data in _parquet_stream(path, {f"{i:06d}": i for i in range(8)})}
    lost = set(range(first, first + rows))
    assert lost == {2, 3}
    for row in range(8):
        if row in lost:
            assert isinstance(got[f"{row:06d}"], Exception), row
            assert "a page of type 7" in str(got[f"{row:06d}"])
        else:
            assert got[f"{row:06d}"] == cells[row], row
