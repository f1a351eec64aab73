"""The same images as loose files, as WebDataset-style tar shards and as Parquet shards."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def labelled_images(count: int, size: int, seed: int, classes: tuple[str, ...]) -> list:
    """(key, label, PNG bytes) of `count` noise images; image i has class classes[i % n]."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        items.append((f"img_{i:04d}", classes[i % len(classes)], buffer.getvalue()))
    return items


def write_loose(folder: Path, items: list) -> None:
    """Loose PNGs KEY.png with a labels.csv (ids: KEY.png)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for key, label, data in items:
        (folder / f"{key}.png").write_bytes(data)
        rows.append(f"{key}.png,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def write_tar_shards(folder: Path, items: list, per_shard: int) -> None:
    """shard-000.tar, ...: KEY.png + KEY.cls (the label) per sample, WebDataset style."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, first in enumerate(range(0, len(items), per_shard)):
        with tarfile.open(folder / f"shard-{number:03d}.tar", "w") as archive:
            for key, label, data in items[first : first + per_shard]:
                for name, payload in ((f"{key}.png", data), (f"{key}.cls", label.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))


def write_parquet_shards(
    folder: Path, items: list, per_shard: int, classes: tuple[str, ...]
) -> None:
    """part-000.parquet, ...: as Hugging Face datasets export images: an `image` struct
    {bytes, path}, an integer `label` named by ClassLabel names in the metadata, a `__key__`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    features = {
        "image": {"_type": "Image"},
        "label": {"_type": "ClassLabel", "names": list(classes)},
    }
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    for number, first in enumerate(range(0, len(items), per_shard)):
        chunk = items[first : first + per_shard]
        table = pa.table(
            {
                "__key__": [key for key, _, _ in chunk],
                "image": [{"bytes": data, "path": f"{key}.png"} for key, _, data in chunk],
                "label": [classes.index(label) for _, label, _ in chunk],
            }
        ).replace_schema_metadata(metadata)
        # small row groups: reading must cross row-group boundaries
        pq.write_table(table, folder / f"part-{number:03d}.parquet", row_group_size=16)
