"""Where a detector's memory goes when each request asks for a new layer set: per top-k call
(a new onnxruntime session of PP-OCRv4 det, run on 6 photos each at its own input size), the
process's RSS before and after, its peak during the call (sampled every 20 ms), the most the
budget had reserved, and what the caches are charged. With `-v` the server's debug lines say
what each session's build and first run added and what it was estimated at, and how far each
run's peak went over its working-set estimate.

An in-process server (its RSS is this process's); the model and photos as `bench/soak.py`
fetches and writes them (the demo's cache).

    PYTHONPATH=. .venv/bin/python bench/session_memory_probe.py --budget-mb 2048 [-v]
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import threading
import time
from pathlib import Path

from bench.soak import fetch_detector, layers_of, write_photos
from maxact.client import Client
from maxact.client.demo.fetch import default_cache_dir
from maxact.server.app import start_server
from maxact.server.ops.memory import BUDGET
from maxact.server.ops.process import resident_bytes

MIB = 1024 * 1024


class Peak(threading.Thread):
    """The highest RSS since `reset`, sampled (the server resets the kernel's VmHWM)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.value = 0

    def run(self) -> None:
        while True:
            self.value = max(self.value, resident_bytes())
            time.sleep(0.02)

    def reset(self) -> None:
        self.value = resident_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-mb", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-v", action="store_true", help="the server's memory debug lines")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)8.0f ms %(message)s")
    logging.getLogger("maxact.server").setLevel(logging.DEBUG if args.v else logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="maxact-session-probe-"))
    (work / "models").mkdir()
    fetch_detector(default_cache_dir(), work / "models")
    write_photos(work / "data", 24)
    peak = Peak()
    peak.start()
    with (
        start_server(
            work / "models",
            work / "data",
            device="cpu",
            metrics_port=0,
            store=work / "store.sqlite",
            memory_budget_mb=args.budget_mb,
        ) as server,
        Client(server.address, timeout=1800) as client,
    ):
        layers = layers_of(client, "ppocr_det", (736, 736))[1:]
        images = sorted((work / "data" / "shapes").iterdir())
        rng = random.Random(0)
        for round_ in range(args.rounds):
            for layer, channels in layers:
                before = resident_bytes()
                peak.reset()
                BUDGET.reserved_peak_bytes = 0
                start = time.perf_counter()
                client.topk_images(
                    "ppocr_det", layer, rng.randrange(channels), rng.sample(images, 6), k=4
                ).result()
                charged = {c.name: c.bytes // MIB for c in BUDGET.caches() if c.bytes}
                print(
                    f"round {round_} {layer}: RSS {before // MIB} -> {resident_bytes() // MIB} "
                    f"MB, peak {peak.value // MIB} MB (budget {args.budget_mb}), reserved at "
                    f"most {BUDGET.reserved_peak_bytes // MIB} MB, caches {charged}, "
                    f"{time.perf_counter() - start:.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
