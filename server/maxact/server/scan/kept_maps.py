"""The activation map of every kept top-k / bottom-k entry, kept while the scan runs.

A `mask` or `heatmap` patch needs the channel's map for the hit's image. Without the maps, a
report runs the layer again once per top-k image (on a text detector at 736 x W, as long as
the scan took for those images). The scan computes every map anyway: a layer that keeps maps
has its tensor among the graph's outputs, and the map of each (image, channel) that would
enter the channel's top-k or bottom-k now is copied. Slots only improve, so every map a kept
entry needs was copied when its image was reduced; folding prunes the rest. Memory: at most
2 x k maps per channel after a fold (k x channels, not the dataset), and copies of candidates
between folds, at most half of that more (`LayerReducer` folds early past it). The maps are
resident memory like any other, so the server's caches make room for them (`ops.memory`).

The maps are an optimisation only: an entry without its map (restored from a checkpoint, which
leaves maps out; a layer over its byte bound) is rendered by running the layer, as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from maxact.common.kinds import TopKKind

# kinds whose entries are whole-image rankings (position mode keeps several units per image)
KINDS = (TopKKind.TOP, TopKKind.BOTTOM)
# the maps of one scan's layers, all kept entries (2 x k x channels maps per layer) together
SCAN_MAPS_BYTES = 32 * 1024 * 1024
# a layer stops keeping maps when, after a fold, they take this many times the plan (inputs of
# their own sizes: the plan counts maps at the reference size)
OVER_PLAN = 2.0
# copies of candidates past this share of the plan since the last prune make the reducer fold
# (and prune) early
FOLD_PAST = 0.5

_Key = tuple[int, int]  # (dataset index, channel position)


def planned_bytes(k: int, channels: int, height: int, width: int, itemsize: int = 4) -> int:
    """What the kept maps of one layer take after a fold: k top and k bottom per channel."""
    return 2 * k * channels * height * width * itemsize


def layers_keeping_maps(
    layers: Sequence[tuple[str, int]], budget: int | None = None
) -> tuple[str, ...]:
    """The layers (name, planned bytes) whose maps a scan keeps: the smallest first (deep
    layers, where `mask` is the render of choice) while they fit `budget` (default
    SCAN_MAPS_BYTES) together."""
    budget = SCAN_MAPS_BYTES if budget is None else budget
    kept: list[str] = []
    total = 0
    for name, size in sorted(layers, key=lambda pair: pair[1]):
        if size <= 0 or total + size > budget:
            continue
        kept.append(name)
        total += size
    return tuple(sorted(kept))


class KeptMaps:
    """Copies of the maps of a layer's kept entries, per ranking, by (image, channel)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound  # the planned bytes (at the reference size)
        self.enabled = True
        self._maps: dict[TopKKind, dict[_Key, np.ndarray]] = {kind: {} for kind in KINDS}
        self.bytes = 0
        self._settled = 0  # bytes after the last prune

    @property
    def over(self) -> bool:
        """Copies of candidates since the last prune past FOLD_PAST of the plan: time to fold
        (and prune)."""
        return self.bytes - self._settled > FOLD_PAST * self.bound

    def offer(
        self, kind: TopKKind, contenders: np.ndarray, maps: np.ndarray, images: np.ndarray
    ) -> None:
        """Copy maps[n, c] ([N, C, H, W]) where contenders[n, c] ([N, C]) holds."""
        if not self.enabled:
            return
        kept = self._maps[kind]
        for n, c in zip(*np.nonzero(contenders), strict=True):
            key = (int(images[n]), int(c))
            if key not in kept:
                kept[key] = copy = np.array(maps[n, c])
                self.bytes += copy.nbytes

    def prune(self, slots: Mapping[TopKKind, np.ndarray]) -> None:
        """Forget the maps of entries no longer kept; `slots[kind]`: [C, k] image of each
        slot of that ranking."""
        for kind, images in slots.items():
            wanted = _wanted(images)
            kept = self._maps[kind]
            for key in [key for key in kept if key not in wanted]:
                self.bytes -= kept.pop(key).nbytes
        self._settled = self.bytes
        if self.bytes > OVER_PLAN * self.bound:
            self.disable()

    def disable(self) -> None:
        """Keep nothing from now on (the layer's entries are rendered by running it)."""
        self.enabled = False
        self._maps = {kind: {} for kind in KINDS}
        self.bytes = self._settled = 0

    def get(self, kind: TopKKind, image: int, position: int) -> np.ndarray | None:
        """The map of the entry of `image` at channel `position`, if kept."""
        return self._maps[kind].get((image, position))

    def merge(self, other: KeptMaps, slots: Mapping[TopKKind, np.ndarray]) -> None:
        """Take the maps of the other reducer (a disjoint shard) that the merged slots
        keep, as copies of their own (`other`'s may be views of a whole state), then prune."""
        if other.enabled:
            for kind, images in slots.items():
                wanted = _wanted(images)
                mine = self._maps[kind]
                for key, value in other._maps[kind].items():
                    if key in wanted and key not in mine:
                        mine[key] = value if value.base is None else value.copy()
                        self.bytes += value.nbytes
        self.prune(slots)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Per ranking: "index" [n, 4] (image, channel position, height, width) and
        "values", every map flattened one after the other."""
        state: dict[str, np.ndarray] = {}
        for kind, maps in self._maps.items():
            if not self.enabled or not maps:
                continue
            index = np.asarray(
                [(image, position, *value.shape) for (image, position), value in maps.items()],
                dtype=np.int64,
            )
            state[f"{kind}/index"] = index
            state[f"{kind}/values"] = np.concatenate([value.ravel() for value in maps.values()])
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Add the maps of `state_dict()`; ValueError when its arrays do not add up."""
        for kind in KINDS:
            index = state.get(f"{kind}/index")
            values = state.get(f"{kind}/values")
            if index is None or values is None:
                continue
            index = np.asarray(index, dtype=np.int64).reshape(-1, 4)
            sizes = index[:, 2] * index[:, 3]
            if (index[:, 2:] <= 0).any() or int(sizes.sum()) != np.asarray(values).size:
                raise ValueError(f"kept {kind} maps: index and values do not match")
            ends = np.cumsum(sizes)
            flat = np.asarray(values)
            for (image, position, height, width), end, size in zip(
                index.tolist(), ends.tolist(), sizes.tolist(), strict=True
            ):
                # a view: a merge copies only the maps it keeps (`merge`)
                value = flat[end - size : end].reshape(height, width)
                if (image, position) not in self._maps[kind]:
                    self._maps[kind][(image, position)] = value
                    self.bytes += value.nbytes


def _wanted(images: np.ndarray) -> set[_Key]:
    """The (image, channel position) of every slot of a [C, k] slot-image array."""
    channels = np.repeat(np.arange(images.shape[0]), images.shape[1])
    return set(zip(images.ravel().tolist(), channels.tolist(), strict=True))
