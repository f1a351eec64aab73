"""A finished scan's kept activation maps on disk: what its `mask` and `heatmap` patches need.

Layout: `<state_dir>/maps/<scan id>/layer-<i>.index.npy` (int64 rows: ranking, channel, rank,
height, width, offset) beside `layer-<i>.values.npy` (every map flattened, one after the other)
and `manifest.json` (layer name -> i). A neuron's maps are found in the small index and read
from the values through a memory map: one question reads its 2 x k maps, not the layer's.

The maps are an optimisation: they are written before the scan's results commit, and a
missing, partial or damaged file (or a map of another size than the render needs) only means
that the layer runs again for that image, as it would without them. So nothing here fails a
scan or a question: a write that fails (a full disk) leaves no folder, and a read that fails
is logged and answered with no maps.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from maxact.common.kinds import TopKKind
from maxact.server.compile_lock import COMPILE_LOCK
from maxact.server.scan.kept_maps import KINDS
from maxact.server.scan.layer import LayerReducer

log = logging.getLogger(__name__)

_MANIFEST = "manifest.json"
_CODES = {kind: code for code, kind in enumerate(KINDS)}


def _rows(
    reducer: LayerReducer,
) -> tuple[list[tuple[int, int, int, int, int, int]], list[np.ndarray]]:
    """(ranking, channel, rank, image, height, width) rows and their maps, ranked as the
    store's rows are (`LayerReducer.entries`)."""
    rows, values = [], []
    for kind in KINDS:
        if kind not in reducer.kinds():
            continue
        for position, channel in enumerate(reducer.channels):
            for rank, entry in enumerate(reducer.entries(position, kind), start=1):
                found = reducer.kept_map(kind, position, entry.image)
                if found is not None:
                    rows.append((_CODES[kind], channel, rank, entry.image, *found.shape))
                    values.append(found)
    return rows, values


class MapsFiles:
    """The kept maps of every finished scan, one folder per scan under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, scan_id: str, reducers: Mapping[str, LayerReducer]) -> None:
        """Store the maps the reducers kept (nothing when none did); never raises for the
        disk: the scan's results do not depend on them."""
        layers = {name: _rows(reducer) for name, reducer in reducers.items()}
        layers = {name: pair for name, pair in layers.items() if pair[0]}
        if not layers:
            return
        folder = self.root / scan_id
        partial = self.root / f".{scan_id}.partial"
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            manifest = {}
            for i, (name, (rows, values)) in enumerate(layers.items()):
                sizes = np.asarray([value.size for value in values], dtype=np.int64)
                offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
                index = np.column_stack([np.asarray(rows, dtype=np.int64), offsets])
                flat = np.concatenate([value.ravel() for value in values])
                np.save(partial / f"layer-{i}.index.npy", index, allow_pickle=False)
                np.save(partial / f"layer-{i}.values.npy", flat, allow_pickle=False)
                manifest[name] = i
            (partial / _MANIFEST).write_text(json.dumps({"layers": manifest}))
            shutil.rmtree(folder, ignore_errors=True)  # a run that stopped before its commit
            os.replace(partial, folder)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            log.warning("scan %s: its activation maps were not stored (%s)", scan_id, exc)

    def neuron(
        self, scan_id: str, layer: str, channel: int, kind: TopKKind
    ) -> dict[int, np.ndarray]:
        """The stored maps of one channel's ranking, by rank ({} when there are none)."""
        if kind not in _CODES:
            return {}
        folder = self.root / scan_id
        try:
            manifest = json.loads((folder / _MANIFEST).read_text())
            i = manifest["layers"].get(layer)
            if i is None:
                return {}
            with COMPILE_LOCK:  # .npy headers are parsed with ast: see compile_lock
                index = np.load(folder / f"layer-{int(i)}.index.npy", allow_pickle=False)
                values = np.load(
                    folder / f"layer-{int(i)}.values.npy", mmap_mode="r", allow_pickle=False
                )
            found = {}
            chosen = index[(index[:, 0] == _CODES[kind]) & (index[:, 1] == channel)]
            for _, _, rank, _, height, width, offset in chosen.tolist():
                part = np.array(values[offset : offset + height * width])
                found[int(rank)] = part.reshape(height, width)
            return found
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            log.warning("scan %s: its stored activation maps cannot be read (%s)", scan_id, exc)
            return {}

    def delete(self, scan_id: str) -> None:
        shutil.rmtree(self.root / scan_id, ignore_errors=True)
