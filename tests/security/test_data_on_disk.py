"""Bad data on disk never takes the server down or hides another dataset: damaged shards and
labels files mark only their own dataset unreadable (with the reason), oversized tar members
and Parquet cells are skipped unread with the bound named, unsafe names are skipped where a
dataset is read, a corrupt Parquet page skips its rows, and classes are bounded. Every case
runs through the real server; the good datasets answer exactly as before."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maxact.client import Client, MaxactError
from maxact.server.app import start_server
from maxact.v1 import topk_service_pb2, topk_service_pb2_grpc
from tests.bad_data import (
    corrupt_data_page,
    corrupt_row_group,
    data_pages,
    noise_png,
    png,
    without_footer,
    write_parquet,
    write_tar,
    write_tar_claiming,
)
from tests.onnx_models import bright_square_model, save

GOOD = {"a.png": 40, "b.png": 200, "c.png": 120}  # id -> grey level (conv1 channel 0 = level)
BEST = ["b.png", "c.png", "a.png"]


def serving(client: Client) -> bool:
    health = health_pb2_grpc.HealthStub(client._channel)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


def write_good(
    folder: Path, labels: str | None = "path,label\na.png,x\nb.png,y\nc.png,x\n"
) -> None:
    folder.mkdir(parents=True)
    for name, level in GOOD.items():
        (folder / name).write_bytes(png(level))
    if labels is not None:
        (folder / "labels.csv").write_text(labels)


def top_ids(client: Client, dataset: str) -> tuple[list[str], dict[str, str]]:
    """(ids of the top-k best first, skipped id -> reason) of conv1 channel 0."""
    result = client.topk("net", "conv1", 0, dataset=dataset, k=3).result()
    return [p.hit.image for p in result.patches], {s.image: s.reason for s in result.skipped}


def finished(client: Client, dataset: str, layers: tuple[str, ...] = ("conv1",)) -> object:
    info = client.scans.create("net", list(layers), dataset, k=3)
    states = list(client.scans.watch(info.id))
    return states[-1]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A data root of good datasets beside one of every kind of damage."""
    root = tmp_path_factory.mktemp("on-disk")
    save(bright_square_model(32), root / "models", "net")
    data = root / "data"
    write_good(data / "good")
    write_tar(data / "good_tar" / "s.tar", [(n, png(v)) for n, v in GOOD.items()])
    write_good(data / "labels_not_utf8", None)
    (data / "labels_not_utf8" / "labels.csv").write_bytes(b"path,label\na.png,caf\xe9\n")
    write_good(data / "labels_huge_field", "path,label\na.png," + "x" * 200_000 + "\n")
    write_good(data / "labels_long", "path,label\na.png," + "y" * 600 + "\n")
    (data / "tar_garbage").mkdir()
    (data / "tar_garbage" / "s.tar").write_bytes(b"not a tar at all\n" * 100)
    write_tar(data / "tar_truncated" / "s.tar", [("a.png", png(40)), ("b.png", png(200))])
    whole = (data / "tar_truncated" / "s.tar").read_bytes()
    (data / "tar_truncated" / "s.tar").write_bytes(whole[:300])  # inside the first header
    write_parquet(data / "parquet_footerless" / "p.parquet", ["a"], [png(40)])
    without_footer(data / "parquet_footerless" / "p.parquet")
    _int64_image(data / "parquet_int64" / "p.parquet")
    with (
        start_server(root / "models", data, device="cpu") as server,
        Client(server.address, timeout=120) as client,
    ):
        yield client


def _int64_image(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"__key__": ["a", "b"], "image": [1, 2]}), path)


# -- points 4 and 5: one bad dataset never hides the others -------------------------------


def test_listing_marks_only_the_damaged_datasets_unreadable_with_their_reasons(
    catalogue: Client,
) -> None:
    listed = {d.name: d for d in catalogue.list_datasets()}
    assert listed["good"].unreadable == ""
    assert (listed["good"].image_count, listed["good"].labels) == (3, ("x", "y"))
    assert (listed["good_tar"].unreadable, listed["good_tar"].image_count) == ("", 3)
    reasons = {
        "labels_not_utf8": "not UTF-8",
        "labels_huge_field": "field larger than field limit",
        "labels_long": "at most 512",
        "tar_garbage": "not a readable tar file",
        "tar_truncated": "not a readable tar file",
        "parquet_footerless": "not a readable Parquet file",
        "parquet_int64": "no image column",
    }
    for name, why in reasons.items():
        assert why in listed[name].unreadable, (name, listed[name].unreadable)
        assert listed[name].image_count == 0
        assert catalogue.get_dataset(name).unreadable == listed[name].unreadable
    assert serving(catalogue)


def test_scans_of_an_unreadable_dataset_are_refused_naming_it_and_good_ones_still_answer(
    catalogue: Client,
) -> None:
    for name in ("labels_not_utf8", "labels_huge_field", "tar_garbage", "parquet_int64"):
        for call in (
            lambda name=name: catalogue.topk("net", "conv1", 0, dataset=name, k=2).result(),
            lambda name=name: catalogue.scans.create("net", ["conv1"], name, k=2),
        ):
            with pytest.raises(MaxactError) as raised:
                call()
            assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION, raised.value
            assert raised.value.reason == "DATASET_UNREADABLE"
            assert repr(name) in raised.value.message
    assert top_ids(catalogue, "good") == (BEST, {})
    assert top_ids(catalogue, "good_tar")[0] == [f"s.tar/{n[0]}" for n in BEST]
    assert serving(catalogue)


# -- point 6: unsafe names are skipped where a dataset is read ------------------------------


def test_unsafe_tar_member_names_are_skipped_with_their_reason_in_topk_and_scans(
    tmp_path: Path,
) -> None:
    save(bright_square_model(32), tmp_path / "models", "net")
    members = [
        ("../evil.png", png(250)),
        ("/etc/evil.png", png(250)),
        ("ctl\x01.png", png(250)),
        *((n, png(v)) for n, v in GOOD.items()),
    ]
    write_tar(tmp_path / "data" / "names" / "s.tar", members)
    write_parquet(
        tmp_path / "data" / "keys" / "p.parquet", ["", "a", "b"], [png(250), png(40), png(200)]
    )
    (tmp_path / "data" / "folders" / "bad\nclass").mkdir(parents=True)
    (tmp_path / "data" / "folders" / "bad\nclass" / "x.png").write_bytes(png(250))
    (tmp_path / "data" / "folders" / "ok").mkdir()
    (tmp_path / "data" / "folders" / "ok" / "y.png").write_bytes(png(90))
    with (
        start_server(tmp_path / "models", tmp_path / "data", device="cpu") as server,
        Client(server.address, timeout=120) as client,
    ):
        listed = {d.name: d for d in client.list_datasets()}
        assert {n: listed[n].image_count for n in listed} == {"names": 3, "keys": 2, "folders": 1}
        assert listed["folders"].labels == ("ok",)
        top, skipped = top_ids(client, "names")
        assert top == ["s.tar/b", "s.tar/c", "s.tar/a"]
        assert sorted(skipped) == ["s.tar/../evil", "s.tar//etc/evil", "s.tar/ctl\x01"]
        assert all("unsafe image id" in why for why in skipped.values()), skipped
        top, skipped = top_ids(client, "keys")
        assert (top, list(skipped)) == (["p.parquet/b", "p.parquet/a"], ["p.parquet/"])
        top, skipped = top_ids(client, "folders")
        assert (top, list(skipped)) == (["ok/y.png"], ["bad\nclass/x.png"])
        for name, bad in (("names", 3), ("keys", 1), ("folders", 1)):
            last = finished(client, name)
            assert last.state == "succeeded", last  # type: ignore[attr-defined]
            assert last.images_failed == bad  # type: ignore[attr-defined]
        assert serving(client)


# -- point 1: members and cells are read within one byte bound -----------------------------


def test_oversized_tar_members_and_parquet_cells_are_skipped_unread_naming_the_bound(
    tmp_path: Path,
) -> None:
    save(bright_square_model(32), tmp_path / "models", "net")
    data = tmp_path / "data"
    good = [(n, png(v)) for n, v in GOOD.items()]
    write_tar_claiming(data / "tar" / "s.tar", good[:1], 10 * 1024**3, good[1:])
    fat = noise_png(160)  # ~75 KiB: over a 64 KiB bound
    write_tar(data / "fat_tar" / "s.tar", [*good, ("fat.png", fat)])
    keys = ["a", "b", "c", "fat"]
    write_parquet(data / "pq" / "p.parquet", keys, [*(d for _, d in good), fat])
    # a row group over 16 images at the bound (3 x 400 KB > 1 MiB) is skipped unread
    noise = [bytes(range(256)) * 1600] * 40
    cells = [*(d for _, d in good), *noise]
    names = [*keys[:3], *map(str, range(40))]
    write_parquet(data / "pq_group" / "p.parquet", names, cells, 3, compression="none")
    with (
        start_server(tmp_path / "models", data, device="cpu", max_image_bytes=64 * 1024) as server,
        Client(server.address, timeout=120) as client,
    ):
        for dataset, prefix, bad in (
            ("tar", "s.tar/", "s.tar/huge"),
            ("fat_tar", "s.tar/", "s.tar/fat"),
            ("pq", "p.parquet/", "p.parquet/fat"),
        ):
            top, skipped = top_ids(client, dataset)
            assert top == [prefix + n.removesuffix(".png") for n in BEST], dataset
            assert list(skipped) == [bad]
            assert "--max-image-bytes" in skipped[bad], skipped
        top, skipped = top_ids(client, "pq_group")
        assert top == ["p.parquet/b", "p.parquet/c", "p.parquet/a"]
        assert len(skipped) == 40
        assert any("skipped unread" in why for why in skipped.values()), skipped
        last = finished(client, "tar")
        assert (last.state, last.images_failed) == ("succeeded", 1)  # type: ignore[attr-defined]
        assert serving(client)


# -- point 7: a corrupt Parquet page skips its rows ---------------------------------------


def test_a_corrupt_parquet_data_page_skips_its_rows_with_a_reason_and_the_scan_goes_on(
    tmp_path: Path,
) -> None:
    """Row group 1 is one data page whose header is damaged: its three rows are skipped."""
    save(bright_square_model(32), tmp_path / "models", "net")
    path = tmp_path / "data" / "pq" / "p.parquet"
    levels = [40, 200, 120, 250, 250, 90, 60]
    write_parquet(path, [f"k{i}" for i in range(7)], [png(v) for v in levels], row_group_size=3)
    corrupt_row_group(path, 1)  # rows k3, k4, k5
    with (
        start_server(tmp_path / "models", tmp_path / "data", device="cpu") as server,
        Client(server.address, timeout=120) as client,
    ):
        assert client.get_dataset("pq").image_count == 7
        top, skipped = top_ids(client, "pq")
        assert top == ["p.parquet/k1", "p.parquet/k2", "p.parquet/k6"]
        assert sorted(skipped) == ["p.parquet/k3", "p.parquet/k4", "p.parquet/k5"]
        assert all(
            "shard 'p.parquet', row group 1, data page 0" in why and "header does not parse" in why
            for why in skipped.values()
        ), skipped
        last = finished(client, "pq")
        assert (last.state, last.images_failed) == ("succeeded", 3)  # type: ignore[attr-defined]
        assert serving(client)


def _brute_force(levels: list[int], lost: set[int], k: int = 3) -> list[str]:
    """The top-k of conv1 channel 0 (the grey level) over the rows that survive."""
    alive = sorted((level, -i) for i, level in enumerate(levels) if i not in lost)
    return [f"p.parquet/k{-i}" for _, i in reversed(alive[-k:])]


@pytest.mark.parametrize("part", ["header", "body"])
def test_a_corrupt_page_inside_a_row_group_loses_only_its_own_rows(
    tmp_path: Path, part: str
) -> None:
    """Eight rows in one row group, one data page each; the page of k3 (the brightest image)
    is damaged, in its header (the reader resynchronises on the next page) or in its data (its
    checksum fails). Only k3 is skipped, with a reason naming the shard, row group and page;
    the rows after it in the group are read as before the damage."""
    save(bright_square_model(32), tmp_path / "models", "net")
    path = tmp_path / "data" / "pq" / "p.parquet"
    levels = [40, 200, 120, 250, 245, 90, 60, 230, 220]
    cells = [png(v) for v in levels]
    keys = [f"k{i}" for i in range(9)]
    write_parquet(path, keys, cells, 8, "none", page_per_row=True, write_page_checksum=True)
    assert corrupt_data_page(path, 0, 3, part) == range(3, 4)
    with (
        start_server(tmp_path / "models", tmp_path / "data", device="cpu") as server,
        Client(server.address, timeout=120) as client,
    ):
        assert client.get_dataset("pq").image_count == 9
        top, skipped = top_ids(client, "pq")
        assert top == _brute_force(levels, {3}) == ["p.parquet/k4", "p.parquet/k7", "p.parquet/k8"]
        assert list(skipped) == ["p.parquet/k3"]
        assert "shard 'p.parquet', row group 0, data page 3" in skipped["p.parquet/k3"], skipped
        assert "rows 3-3 are skipped" in skipped["p.parquet/k3"], skipped
        last = finished(client, "pq")
        assert (last.state, last.images_failed) == ("succeeded", 1)  # type: ignore[attr-defined]
        assert serving(client)


def test_a_corrupt_key_page_leaves_only_its_rows_out_of_the_listing(tmp_path: Path) -> None:
    """The `__key__` column's page 1 is damaged (its checksum fails): its rows have no id, so
    they are not listed; every other row lists and ranks as written, the scan succeeds."""
    save(bright_square_model(32), tmp_path / "models", "net")
    path = tmp_path / "data" / "pq" / "p.parquet"
    levels = [(41 * i + 7) % 251 for i in range(20)]
    write_parquet(
        path,
        [f"k{i}" for i in range(20)],
        [png(v) for v in levels],
        20,
        "zstd",
        data_page_size=1,
        write_batch_size=4,
        write_page_checksum=True,
    )
    lost = set(corrupt_data_page(path, 0, 1, "body", column="__key__"))
    assert lost == {4, 5, 6, 7}
    with (
        start_server(tmp_path / "models", tmp_path / "data", device="cpu") as server,
        Client(server.address, timeout=120) as client,
    ):
        dataset = client.get_dataset("pq")
        assert (dataset.unreadable, dataset.image_count) == ("", 16)
        top, skipped = top_ids(client, "pq")
        assert (top, skipped) == (_brute_force(levels, lost), {})
        last = finished(client, "pq")
        state = (last.state, last.images_done, last.images_failed)  # type: ignore[attr-defined]
        assert state == ("succeeded", 16, 0)
        assert serving(client)


def test_a_page_whose_row_count_lies_keeps_the_coarser_rule_with_its_reason(
    tmp_path: Path,
) -> None:
    """k3's page header claims 2 rows instead of 1: the pages no longer add up to the footer's
    row count, and a header count may lie anywhere, so no row's place in the group can be
    trusted: its rows are skipped, saying why they are not read page by page (pyarrow is not
    asked: it would read on past the lie); k8, in the next group, is read."""
    save(bright_square_model(32), tmp_path / "models", "net")
    path = tmp_path / "data" / "pq" / "p.parquet"
    levels = [40, 200, 120, 250, 245, 90, 60, 230, 220]
    write_parquet(path, [f"k{i}" for i in range(9)], [png(v) for v in levels], 8, "none", True)
    data = bytearray(path.read_bytes())
    # data_page_header (a struct field) -> num_values 1 (zigzag 2) becomes 2 (zigzag 4)
    found = re.compile(rb"[\x1c\x2c]\x15\x02").search(bytes(data), data_pages(path, 0)[3][0])
    assert found is not None
    data[found.start() + 2] = 4
    path.write_bytes(bytes(data))
    with (
        start_server(tmp_path / "models", tmp_path / "data", device="cpu") as server,
        Client(server.address, timeout=120) as client,
    ):
        top, skipped = top_ids(client, "pq")
        assert top == _brute_force(levels, set(range(8))) == ["p.parquet/k8"]
        assert sorted(skipped) == [f"p.parquet/k{i}" for i in range(8)]
        assert all("damaged from row 0 on" in why for why in skipped.values()), skipped
        assert all("9 rows where the footer says 8" in why for why in skipped.values()), skipped
        assert serving(client)


@pytest.mark.parametrize(("version", "struct"), [("1.0", False), ("2.0", True)])
def test_a_corrupt_page_among_many_multi_row_pages_skips_exactly_that_pages_rows(
    tmp_path: Path, version: str, struct: bool
) -> None:
    """30 rows in one snappy row group of several rows per page, checksums written (the image
    column binary, or a {bytes, path} struct); the data of the page holding the brightest
    images is damaged. Exactly that page's rows are skipped and the top-k is the brute-force
    answer over the rest (listing still counts every row)."""
    save(bright_square_model(32), tmp_path / "models", "net")
    path = tmp_path / "data" / "pq" / "p.parquet"
    levels = [(37 * i) % 251 for i in range(30)]
    cells = [png(v) for v in levels]
    write_parquet(
        path,
        [f"k{i}" for i in range(30)],
        cells,
        30,
        "snappy",
        data_page_size=1,
        write_batch_size=4,
        write_page_checksum=True,
        data_page_version=version,
        write_statistics=False,
        struct=struct,
    )
    column = "image.bytes" if struct else "image"
    pages = data_pages(path, 0, column)
    assert len(pages) > 3 and all(rows > 1 for *_, rows in pages[:-1])
    brightest = levels.index(max(levels))
    page = next(n for n, (*_, first, rows) in enumerate(pages) if first <= brightest < first + rows)
    lost = set(corrupt_data_page(path, 0, page, "body", column))
    with (
        start_server(tmp_path / "models", tmp_path / "data", device="cpu") as server,
        Client(server.address, timeout=120) as client,
    ):
        assert client.get_dataset("pq").image_count == 30
        top, skipped = top_ids(client, "pq")
        assert top == _brute_force(levels, lost)
        assert sorted(skipped) == sorted(f"p.parquet/k{i}" for i in lost)
        assert all(f"row group 0, data page {page}" in why for why in skipped.values()), skipped
        assert all("checksum" in why for why in skipped.values()), skipped
        last = finished(client, "pq")
        state = (last.state, last.images_failed)  # type: ignore[attr-defined]
        assert state == ("succeeded", len(lost))
        assert serving(client)


# -- point 2: classes are counted from images and bounded ----------------------------------


def test_classes_count_only_labels_with_images_and_scans_over_the_bound_are_refused(
    tmp_path: Path,
) -> None:
    save(bright_square_model(32), tmp_path / "models", "net")
    rows = "".join(f"missing_{i}.png,class_{i}\n" for i in range(20_000))
    write_good(tmp_path / "data" / "many", "path,label\na.png,x\nb.png,y\nc.png,z\n" + rows)
    with (
        start_server(tmp_path / "models", tmp_path / "data", device="cpu", max_classes=2) as server,
        Client(server.address, timeout=120) as client,
    ):
        assert client.get_dataset("many").labels == ("x", "y", "z")
        with pytest.raises(MaxactError) as raised:
            client.scans.create("net", ["conv1"], "many", k=2)
        assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert raised.value.reason == "TOO_MANY_CLASSES"
        assert "3 classes" in raised.value.message
        assert "--max-classes" in raised.value.message
        assert top_ids(client, "many") == (BEST, {})
        assert serving(client)


def test_class_statistics_over_their_byte_budget_are_refused_before_the_scan_allocates(
    tmp_path: Path,
) -> None:
    save(bright_square_model(32), tmp_path / "models", "net")
    write_good(tmp_path / "data" / "ds")
    # 2 classes x (2 + 2 channels) x 504 bytes = 4,032 bytes: over a 4,000-byte budget
    with (
        start_server(
            tmp_path / "models",
            tmp_path / "data",
            device="cpu",
            max_class_statistics_mb=4000 / 2**20,
        ) as server,
        Client(server.address, timeout=120) as client,
    ):
        assert finished(client, "ds").state == "succeeded"  # type: ignore[attr-defined]
        with pytest.raises(MaxactError) as raised:
            client.scans.create("net", ["conv1", "relu1"], "ds", k=2)
        assert raised.value.reason == "TOO_MANY_CLASSES"
        assert "--max-class-statistics-mb" in raised.value.message
        assert serving(client)


def _keep(client: Client, name: str, images: list[tuple[str, bytes, str]]) -> list[object]:
    """StreamTopKImages with labels and keep_as_dataset, through the raw stub (the Python
    client sends no labels)."""
    stub = topk_service_pb2_grpc.TopKServiceStub(client._channel)
    query = topk_service_pb2.TopKQuery(model="net", layer="conv1", channel=0, k=2)
    messages = [topk_service_pb2.StreamTopKImagesRequest(query=query, keep_as_dataset=name)]
    messages += [
        topk_service_pb2.StreamTopKImagesRequest(
            image=topk_service_pb2.ClientImage(id=i, data=d, label=label)
        )
        for i, d, label in images
    ]
    return list(stub.StreamTopKImages(iter(messages), timeout=60))


def test_keep_as_dataset_refuses_an_over_long_label_and_the_catalogue_still_lists(
    tmp_path: Path,
) -> None:
    save(bright_square_model(32), tmp_path / "models", "net")
    write_good(tmp_path / "data" / "good")
    with (
        start_server(tmp_path / "models", tmp_path / "data", device="cpu", max_classes=5) as server,
        Client(server.address, timeout=120) as client,
    ):
        with pytest.raises(grpc.RpcError) as raised:
            _keep(client, "long", [("a.png", png(40), "x" * 200_000)])
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 512" in str(raised.value.details())
        # one class per image, 8 of them: kept, listed, and refused for a scan by the bound
        _keep(client, "wide", [(f"{i}.png", png(10 * i), f"class_{i}") for i in range(8)])
        listed = {d.name: d for d in client.list_datasets()}
        assert sorted(listed) == ["good", "wide"]
        assert len(listed["wide"].labels) == 8
        with pytest.raises(MaxactError) as refused:
            client.scans.create("net", ["conv1"], "wide", k=2)
        assert refused.value.reason == "TOO_MANY_CLASSES"
        assert top_ids(client, "good") == (BEST, {})
        assert serving(client)
