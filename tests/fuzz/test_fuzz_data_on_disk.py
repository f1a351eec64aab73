"""Fuzzing data on disk through the real server: mutated tar headers, mutated Parquet files
(anywhere, or inside one data page of a file of many pages) and arbitrary labels.csv files,
each dropped into the data root as a new dataset beside a good one.
Listing, GetDataset, StreamTopK and CreateScan over it never answer INTERNAL or UNKNOWN nor
name a server folder; the good dataset keeps listing, readable, with its images; afterwards the
server is SERVING and answers a known top-k."""

from __future__ import annotations

import io
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from maxact.client import Client, MaxactError
from maxact.server.app import start_server
from tests.bad_data import data_pages, png, tar_member, write_parquet
from tests.onnx_models import bright_square_model, save

# each example lists, reads and scans a dataset (~1 s): the long profile's 400 need more than
# the suite's per-test timeout
pytestmark = pytest.mark.timeout(3600)
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
GOOD = {"a.png": 40, "b.png": 200, "c.png": 120}
_names = itertools.count()


class _Server:
    def __init__(self, client: Client, data: Path, roots: list[str]) -> None:
        self.client, self.data, self.roots = client, data, roots


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    root = tmp_path_factory.mktemp("fuzz-disk")
    save(bright_square_model(32), root / "models", "net")
    (root / "data" / "good").mkdir(parents=True)
    for name, level in GOOD.items():
        (root / "data" / "good" / name).write_bytes(png(level))
    with (
        start_server(root / "models", root / "data", device="cpu") as server,
        Client(server.address, timeout=120) as client,
    ):
        yield _Server(client, root / "data", [str(root), str(root.resolve())])


def _exercise(server: _Server, name: str) -> None:
    """Every dataset call over `name`; then the good dataset still lists and ranks."""
    client = server.client
    calls = [
        lambda: client.get_dataset(name),
        lambda: client.topk("net", "conv1", 0, dataset=name, k=2).result(),
        lambda: list(client.scans.watch(client.scans.create("net", ["conv1"], name, k=2).id)),
    ]
    for call in calls:
        try:
            call()
        except MaxactError as error:
            assert error.code not in FORBIDDEN, str(error)
            assert not any(root in error.message for root in server.roots), str(error)
    listed = {d.name: d for d in client.list_datasets()}
    assert name in listed
    assert (listed["good"].unreadable, listed["good"].image_count) == ("", 3)
    assert not any(root in listed[name].unreadable for root in server.roots), listed[name]


def _tar_bytes() -> bytes:
    members = [(n, png(v)) for n, v in GOOD.items()] + [("a.cls", b"x"), ("b.cls", b"y")]
    return b"".join(tar_member(n, d) for n, d in members) + b"\0" * 1024


TAR = _tar_bytes()
HEADERS = [0, *itertools.accumulate(len(tar_member(n, png(v))) for n, v in GOOD.items())]
FIELDS = {"name": (0, 100), "mode": (100, 8), "size": (124, 12), "type": (156, 1)}


def _fix_checksum(header: bytearray, at: int) -> None:
    block = header[at : at + 512]
    block[148:156] = b" " * 8
    header[at + 148 : at + 156] = b"%06o\0 " % sum(block)


@st.composite
def mutated_tars(draw: st.DrawFn) -> bytes:
    """A valid tar with one header field overwritten (checksum fixed or not), or cut short."""
    data = bytearray(TAR)
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data)))])
    # PAX headers come first: target the ustar header of a member, or the PAX block before it
    at = draw(st.sampled_from(HEADERS[:-1])) + draw(st.sampled_from([0, 512, 1024]))
    offset, width = FIELDS[draw(st.sampled_from(sorted(FIELDS)))]
    field = draw(
        st.one_of(
            st.binary(min_size=width, max_size=width),
            st.integers(0, 8**11 - 1).map(lambda n: (b"%011o" % n)[:width].ljust(width, b"\0")),
        )
    )
    data[at + offset : at + offset + width] = field
    if draw(st.booleans()):
        _fix_checksum(data, at)
    return bytes(data)


@given(data=mutated_tars())
def test_any_mutated_tar_shard_is_never_internal_and_hides_no_other_dataset(
    on_disk: _Server, data: bytes
) -> None:
    name = f"tar_{next(_names)}"
    (on_disk.data / name).mkdir()
    (on_disk.data / name / "s.tar").write_bytes(data)
    _exercise(on_disk, name)


def _parquet_bytes() -> bytes:
    """Keys, PNG cells and integer labels in two row groups."""
    table = pa.table(
        {"__key__": list("abc"), "image": [png(v) for v in GOOD.values()], "label": [0, 1, 0]}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=2)
    return buffer.getvalue()


PARQUET = _parquet_bytes()


@st.composite
def mutated_parquets(draw: st.DrawFn) -> bytes:
    """A valid Parquet file with bytes overwritten (anywhere, or in the footer), or cut."""
    data = bytearray(PARQUET)
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data)))])
    footer = draw(st.booleans())
    for _ in range(draw(st.integers(1, 8))):
        low = len(data) - 200 if footer else 0
        at = draw(st.integers(max(low, 0), len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


@given(data=mutated_parquets())
def test_any_mutated_parquet_shard_is_never_internal_and_hides_no_other_dataset(
    on_disk: _Server, data: bytes
) -> None:
    name = f"parquet_{next(_names)}"
    (on_disk.data / name).mkdir()
    (on_disk.data / name / "p.parquet").write_bytes(data)
    _exercise(on_disk, name)


PAGED_LEVELS = [(53 * i + 17) % 251 for i in range(12)]


def _paged_parquet() -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """12 rows in two row groups (8 + 4) of two-row snappy data pages with checksums, and the
    data pages of the first group (header offset, data offset, first row, rows)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.parquet"
        cells = [png(v) for v in PAGED_LEVELS]
        write_parquet(
            path,
            [f"k{i}" for i in range(12)],
            cells,
            8,
            "snappy",
            data_page_size=1,
            write_batch_size=2,
            write_page_checksum=True,
            write_statistics=False,
        )
        return path.read_bytes(), data_pages(path, 0)


PAGED, PAGES = _paged_parquet()


@st.composite
def mutated_pages(draw: st.DrawFn) -> bytes:
    """The paged file with 1 to 8 bytes overwritten inside one data page (header or data) of
    its first row group."""
    data = bytearray(PAGED)
    page = draw(st.integers(0, len(PAGES) - 1))
    start = PAGES[page][0]
    end = PAGES[page + 1][0] if page + 1 < len(PAGES) else PAGES[page][1] + 8
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(start, end - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@given(data=mutated_pages())
def test_a_mutated_parquet_page_skips_only_rows_of_its_row_group_and_the_rest_rank_exactly(
    on_disk: _Server, data: bytes
) -> None:
    """Whatever the server reads of a damaged row group is what was written: the top-k is the
    brute-force answer over the rows it did not skip, and the second row group is whole."""
    name = f"paged_{next(_names)}"
    (on_disk.data / name).mkdir()
    (on_disk.data / name / "p.parquet").write_bytes(data)
    _exercise(on_disk, name)
    result = on_disk.client.topk("net", "conv1", 0, dataset=name, k=3).result()
    skipped = {int(s.image.removeprefix("p.parquet/k")) for s in result.skipped}
    assert skipped <= set(range(8)), result.skipped
    alive = sorted(((v, -i) for i, v in enumerate(PAGED_LEVELS) if i not in skipped), reverse=True)
    assert [p.hit.image for p in result.patches] == [f"p.parquet/k{-i}" for _, i in alive[:3]]


@st.composite
def labels_files(draw: st.DrawFn) -> bytes:
    """labels.csv files: CSV-ish text with quotes, long fields and real ids, or any bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from([*GOOD, "missing.png", "", "path", '"a.png"']),
                st.one_of(
                    st.text(max_size=40),
                    st.integers(0, 300_000).map(lambda n: "x" * n),
                    st.sampled_from(['"', '"unclosed', "a\nb", "\0"]),
                ),
            ),
            max_size=6,
        )
    )
    text = "path,label\n" + "".join(f"{p},{label}\n" for p, label in rows)
    return text.encode("utf-8", "surrogatepass")


@given(data=labels_files())
def test_any_labels_file_is_never_internal_and_hides_no_other_dataset(
    on_disk: _Server, data: bytes
) -> None:
    name = f"labels_{next(_names)}"
    (on_disk.data / name).mkdir()
    for image, level in GOOD.items():
        (on_disk.data / name / image).write_bytes(png(level))
    (on_disk.data / name / "labels.csv").write_bytes(data)
    _exercise(on_disk, name)


def test_zz_after_fuzzing_data_the_server_is_serving_and_answers_a_known_topk(
    on_disk: _Server,
) -> None:
    """Runs last in this module: the damaged datasets above left the server healthy."""
    health = health_pb2_grpc.HealthStub(on_disk.client._channel)
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    result = on_disk.client.topk("net", "conv1", 0, dataset="good", k=3).result()
    assert [p.hit.image for p in result.patches] == ["b.png", "c.png", "a.png"]
    assert result.skipped == ()
