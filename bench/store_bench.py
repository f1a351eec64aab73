"""The store's back ends compared: CreateScan, GetScan and neuron-query latency of one server
on SQLite vs on PostgreSQL (a real server on this machine, started like the tests start it),
and the take-over time of a scan whose replica was SIGKILLed (a `maxact serve` subprocess A
and an in-process replica B over one PostgreSQL database).

Usage: python bench/store_bench.py [--calls 200] [--creates 40] [--lease 15] [--takeovers 3]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests' PostgreSQL and models

from maxact.client import Client
from maxact.server.app import start_server
from maxact.server.jobs.store import Store
from tests.datasets import write_images
from tests.onnx_models import heavy_cnn, save
from tests.postgres import Postgres
from tests.serve_process import serve_process

SIZE, LAYER = 64, "relu3"


def _ms(samples: list[float]) -> tuple[float, float]:
    """(median, 90th percentile) in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(0.9 * (len(ordered) - 1))] * 1e3


def _timed(call, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def latencies(root: Path, store: Path | str, state: Path, calls: int, creates: int) -> dict:
    with (
        start_server(
            root / "models", root / "data", device="cpu", store=store, state_dir=state
        ) as server,
        Client(server.address, timeout=120) as client,
    ):
        done = client.scans.create("heavy", [LAYER], "few", k=9)
        assert [i.state for i in client.scans.watch(done.id)][-1] == "succeeded"
        for _ in range(20):  # warm both paths
            client.scans.get(done.id)
            client.scans.neuron(done.id, LAYER, 0, k=9, patches=False)
        result = {
            "GetScan": _ms(_timed(lambda: client.scans.get(done.id), calls)),
            "neuron (k 9, no patches)": _ms(
                _timed(lambda: client.scans.neuron(done.id, LAYER, 3, k=9, patches=False), calls)
            ),
        }
        counter = iter(range(creates))
        result["CreateScan"] = _ms(
            _timed(
                lambda: client.scans.create(
                    "heavy", [LAYER], "few", k=3, request_id=f"bench-{next(counter)}"
                ),
                creates,
            )
        )
        return result


def _owner(url: str, scan_id: str) -> str:
    with Store(url).engine.connect() as db:
        return str(
            db.execute(text("SELECT owner FROM scans WHERE id = :id"), {"id": scan_id}).scalar()
        )


def takeover(root: Path, url: str, state: Path, lease: float) -> tuple[float, float]:
    """(seconds from SIGKILL to B's claim, to B's first progress past the checkpoint)."""
    flags = [
        *["--model-root", str(root / "models"), "--data-root", str(root / "data")],
        *["--store", url, "--state-dir", str(state), "--lease-seconds", str(lease)],
        *["--checkpoint-images", "16"],
    ]
    with serve_process(*flags) as (process, address):
        with Client(address, timeout=60) as on_a:
            scan = on_a.scans.create("heavy", [LAYER], "many", k=3)
            for info in on_a.scans.watch(scan.id):
                if info.images_done >= 64:
                    break
        owner = _owner(url, scan.id)
        with (
            start_server(
                root / "models",
                root / "data",
                device="cpu",
                store=url,
                state_dir=state,
                lease_seconds=lease,
            ) as b,
            Client(b.address, timeout=60) as on_b,
        ):
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            killed = time.monotonic()
            while _owner(url, scan.id) == owner:
                time.sleep(0.05)
            claimed = time.monotonic() - killed
            before = on_b.scans.get(scan.id).images_done
            while on_b.scans.get(scan.id).images_done <= before:
                time.sleep(0.02)
            progressed = time.monotonic() - killed
            assert [i.state for i in on_b.scans.watch(scan.id)][-1] == "succeeded"
    return claimed, progressed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--creates", type=int, default=40)
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--takeovers", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maxact-store-bench-"))
    save(heavy_cnn(SIZE, depth=4), root / "models", "heavy")
    write_images(root / "data" / "few", 8, SIZE, seed=1)
    write_images(root / "data" / "many", 400, SIZE, seed=2)
    postgres = Postgres()
    try:
        sqlite = latencies(root, root / "s.sqlite", root / "state", args.calls, args.creates)
        pg = latencies(root, postgres.url(), root / "state", args.calls, args.creates)
        print(f"{'call':28} {'SQLite median/p90 ms':>22} {'PostgreSQL median/p90 ms':>26} ratio")
        for call in ("CreateScan", "GetScan", "neuron (k 9, no patches)"):
            (sm, s9), (pm, p9) = sqlite[call], pg[call]
            print(f"{call:28} {sm:10.2f} / {s9:8.2f} {pm:13.2f} / {p9:8.2f} {pm / sm:6.2f}")
        for run in range(args.takeovers):
            claimed, progressed = takeover(root, postgres.url(), root / "state", args.lease)
            print(
                f"take-over {run + 1} (lease {args.lease:g} s): claimed {claimed:.2f} s after the "
                f"kill, first progress {progressed:.2f} s"
            )
    finally:
        postgres.close()


if __name__ == "__main__":
    main()
