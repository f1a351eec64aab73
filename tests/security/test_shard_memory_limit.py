"""Shards that claim far more than the server's memory, against a real `maxact serve` whose
address space the test limits (RLIMIT_AS, as test_memory_limit does): a tar member whose header
claims 10 GiB (a sparse file) and a Parquet row group whose 64 cells share one 40 MB dictionary
value (2.5 GB once read as one record batch, 7 KB on disk) are skipped with the bound named,
nothing of their claimed size is allocated, and the good samples beside them still rank."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from maxact.client import Client
from tests.bad_data import png, write_parquet, write_parquet_repeating, write_tar_claiming
from tests.onnx_models import bright_square_model, save
from tests.security.test_data_on_disk import BEST, GOOD, serving
from tests.serve_process import serve_process

ADDRESS_SPACE = 2560 * 1024 * 1024  # the server and a small scan fit; none of the claims do


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def test_shards_claiming_gigabytes_are_skipped_under_a_memory_limit(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    models, data = tmp_path / "models", tmp_path / "data"
    save(bright_square_model(32), models, "net")
    good = [(name, png(level)) for name, level in GOOD.items()]
    write_tar_claiming(data / "tar" / "s.tar", good[:1], 10 * 1024**3, good[1:])
    write_parquet_repeating(data / "pq" / "a.parquet", 40 * 1024 * 1024, 64)
    write_parquet(data / "pq" / "b.parquet", [n[0] for n, _ in good], [d for _, d in good])

    flags = ["--model-root", str(models), "--data-root", str(data)]
    flags += ["--store", str(tmp_path / "store.sqlite"), "--max-image-bytes", str(16 * 2**20)]
    limited = serve_process(*flags, env={"MALLOC_ARENA_MAX": "2"}, preexec_fn=_limit_address_space)
    with limited as (process, address), Client(address, timeout=180) as client:
        for dataset, prefix, bad in (
            ("tar", "s.tar/", ["s.tar/huge"]),
            ("pq", "b.parquet/", [f"a.parquet/big_{i:03d}" for i in range(64)]),
        ):
            result = client.topk("net", "conv1", 0, dataset=dataset, k=3).result()
            assert [p.hit.image for p in result.patches] == [prefix + n[0] for n in BEST]
            skipped = {s.image: s.reason for s in result.skipped}
            assert sorted(skipped) == bad
            odd = {i: why for i, why in skipped.items() if "--max-image-bytes" not in why}
            assert not odd, odd
            info = client.scans.create("net", ["conv1"], dataset, k=3)
            last = list(client.scans.watch(info.id))[-1]
            assert (last.state, last.images_failed) == ("succeeded", len(bad)), last
        assert process.poll() is None, "the server died"
        assert serving(client)
