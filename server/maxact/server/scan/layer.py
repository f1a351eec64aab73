"""Everything a scan keeps for one layer: top-k / bottom-k per channel, position mode, statistics.

Memory is k x channels (+ classes x channels), whatever the dataset size. Every part merges
exactly, so reducers of disjoint shards (image indices global to the union) merge into the
reducer of the union.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from maxact.common.defaults import DEFAULT_K
from maxact.common.kinds import TopKKind
from maxact.server.graph.reductions import LayerReduction
from maxact.server.rf import TensorField
from maxact.server.scan.kept_maps import KINDS, KeptMaps, planned_bytes
from maxact.server.scan.reducers import NO_IMAGE, Entry, RunningTopK
from maxact.server.scan.state_file import read_arrays, write_arrays
from maxact.server.scan.statistics import ChannelStatistics, StatisticsReducer
from maxact.server.scan.suppress import overlap_matrix, suppressed_candidates

# Per-image responses are folded into the rankings and statistics every FOLD_IMAGES images,
# or sooner for wide layers (FOLD_VALUES responses): bounded memory, fixed costs paid rarely.
FOLD_IMAGES = 256
FOLD_VALUES = 1 << 20

# one batch's (responses, ys, xs) [N, C], images [N] and labels [N] (or None)
_Responses = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


def channels_first(output: np.ndarray, field: TensorField) -> np.ndarray:
    """[B, C, H, W] view of a spatial tensor, whatever its layout (a token sequence: its
    grid tokens)."""
    if field.tokens is not None:
        output = field.tokens.view(output)
    axes = (field.channel_axis, field.height_axis, field.width_axis)
    return np.moveaxis(output, axes, (1, 2, 3))


@dataclass(frozen=True)
class ReduceOptions:
    """What to keep per channel. `image` mode top-k is always kept."""

    k: int = DEFAULT_K
    bottom: bool = True  # the k weakest per-image responses too
    position: bool = False  # position mode (several units per image, RF-overlap suppressed)
    position_bottom: bool = False
    per_image_cap: int = 0  # position mode: at most this many units per image (0: k)
    # image mode on one unit: rank each channel's value at this (y, x) of a spatial tensor
    # instead of its maximum over space (a neuron query for a single unit)
    unit: tuple[int, int] | None = None
    # keep every image's response per channel (a scan's responses matrix), handed over in
    # blocks by `take_responses`
    keep_responses: bool = False
    # the layers whose top-k and bottom-k entries keep their activation maps (`kept_maps`)
    keep_maps: tuple[str, ...] = ()


class LayerReducer:
    """Reduces a layer's output batches; `channels` selects a subset (default: all)."""

    def __init__(
        self,
        name: str,
        field: TensorField | None,
        shape: tuple[int, ...],
        options: ReduceOptions,
        classes: tuple[str, ...] = (),
        channels: tuple[int, ...] | None = None,
    ) -> None:
        self.name = name
        self.field = field if field is not None and field.spatial else None
        total = self.field.channels if self.field is not None else int(np.prod(shape))
        self.channels = tuple(range(total)) if channels is None else tuple(channels)
        self.options = options
        count = len(self.channels)
        self._topk: dict[TopKKind, RunningTopK] = {TopKKind.TOP: RunningTopK(count, options.k)}
        if options.bottom:
            self._topk[TopKKind.BOTTOM] = RunningTopK(count, options.k, largest=False)
        if self.field is not None and options.position:
            self._topk[TopKKind.POSITION] = RunningTopK(count, options.k)
        if self.field is not None and options.position_bottom:
            self._topk[TopKKind.POSITION_BOTTOM] = RunningTopK(count, options.k, largest=False)
        self._stats = StatisticsReducer(count, classes)
        # image-mode responses of recent batches, folded in together every `_fold_every`
        # images (see `fold`)
        self._pending: list[_Responses] = []
        self._fold_every = max(1, min(FOLD_IMAGES, FOLD_VALUES // count))
        # per field (one per input size), the field kept alive so its id stays its own
        self._groups_at: dict[int, tuple[TensorField, list[tuple[np.ndarray, ...]]]] = {}
        # (dataset indices [N], float32 responses [N, C]) of the batches since the last block
        self._kept: list[tuple[np.ndarray, np.ndarray]] = []
        self.kept_maps: KeptMaps | None = None
        if self.field is not None and name in options.keep_maps and options.unit is None:
            size = planned_bytes(options.k, count, self.field.height, self.field.width)
            self.kept_maps = KeptMaps(size)

    @property
    def spatial(self) -> bool:
        return self.field is not None

    @property
    def stats(self) -> StatisticsReducer:
        """The statistics, with every batch seen so far folded in."""
        self.fold()
        return self._stats

    def fold(self) -> None:
        """Fold the pending per-image responses into top-k, bottom-k and statistics.

        Responses wait for up to FOLD_IMAGES images: sorting the k kept slots with the
        candidates and adding to the exact sums cost about as much for 256 images as for 16,
        so per batch of 16 these fixed costs were most of the reduction's CPU. Every reading
        method folds first, so what is read never depends on when folding happened.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        responses, ys, xs, images = (
            np.concatenate([part[i] for part in pending]) for i in range(4)
        )
        labels = None
        if any(part[4] is not None for part in pending):
            labels = np.concatenate(
                [np.full(len(p[3]), -1, np.int64) if p[4] is None else p[4] for p in pending]
            )
        for kind in (TopKKind.TOP, TopKKind.BOTTOM):
            if kind in self._topk:
                self._topk[kind].update(responses, images, ys, xs)
        self._stats.update(responses, labels)
        self._prune_maps()

    def _slot_images(self) -> dict[TopKKind, np.ndarray]:
        """[C, k] image of each slot, per ranking whose entries keep maps."""
        return {kind: self._topk[kind].kept_images() for kind in KINDS if kind in self._topk}

    def _prune_maps(self) -> None:
        if self.kept_maps is not None:
            self.kept_maps.prune(self._slot_images())

    def _overlap_groups(self, field: TensorField) -> list[tuple[np.ndarray, ...]]:
        """(positions in self.channels, row overlap, col overlap) per receptive-field group,
        for the field at one input size (cached: per-image sizing brings a few sizes)."""
        cached = self._groups_at.get(id(field))
        if cached is not None:
            return cached[1]
        wanted = np.asarray(self.channels)
        groups: list[tuple[np.ndarray, ...]] = []
        for group in field.groups:
            inside = np.flatnonzero((wanted >= group.first) & (wanted <= group.last))
            if inside.size:
                groups.append((inside, overlap_matrix(group.rows), overlap_matrix(group.cols)))
        self._groups_at[id(field)] = (field, groups)
        return groups

    def maps(self, output: np.ndarray) -> np.ndarray:
        """[B, C, H, W] (spatial) or [B, C] (flat) of the selected channels."""
        if self.field is not None:
            moved = channels_first(output, self.field)
        else:
            moved = output.reshape(output.shape[0], -1)
        if len(self.channels) != moved.shape[1]:
            moved = moved[:, list(self.channels)]
        return moved

    def update(
        self,
        output: np.ndarray,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        field: TensorField | None = None,
    ) -> None:
        """One batch of the layer's output; `images` are dataset indices [B]; `field` is the
        layer's field at this batch's input size (default: the one given at construction)."""
        maps = self.maps(np.asarray(output))
        b = maps.shape[0]
        if self.field is None:
            responses = maps
            ys = xs = np.zeros((b, len(self.channels)), dtype=np.int64)
        elif self.options.unit is not None:
            y, x = self.options.unit
            responses = maps[:, :, y, x]
            ys = np.full(responses.shape, y, dtype=np.int64)
            xs = np.full(responses.shape, x, dtype=np.int64)
        else:
            flat = maps.reshape(b, maps.shape[1], -1)
            best = np.argmax(flat, axis=2)  # first max: row-major tie rule
            responses = np.take_along_axis(flat, best[..., None], axis=2)[..., 0]
            ys, xs = np.divmod(best, maps.shape[3])
        self._update_responses(responses, ys, xs, maps, images, labels, field)

    def update_reduced(
        self,
        reduction: LayerReduction,
        outputs: Mapping[str, np.ndarray],
        images: np.ndarray,
        labels: np.ndarray | None = None,
        field: TensorField | None = None,
    ) -> None:
        """One batch of the graph's in-graph reductions of this layer (`graph.reductions`);
        `field` as in `update`."""
        if reduction.kind in ("flat", "host"):
            self.update(outputs[reduction.tensor], images, labels, field)
            return
        width = (field or self.field).width  # type: ignore[union-attr]
        maps = self.maps(np.asarray(outputs[reduction.tensor])) if reduction.keep_map else None
        if reduction.kind == "unit":
            assert self.options.unit is not None
            (responses,) = (np.asarray(outputs[name]) for name in reduction.outputs[:1])
            y, x = self.options.unit
            ys = np.full(responses.shape, y, dtype=np.int64)
            xs = np.full(responses.shape, x, dtype=np.int64)
        else:
            value, index = reduction.outputs[:2]
            responses = np.asarray(outputs[value])
            ys, xs = np.divmod(np.asarray(outputs[index], dtype=np.int64), width)
        self._update_responses(responses, ys, xs, maps, images, labels, field)

    def _update_responses(
        self,
        responses: np.ndarray,
        ys: np.ndarray,
        xs: np.ndarray,
        maps: np.ndarray | None,
        images: np.ndarray,
        labels: np.ndarray | None,
        field: TensorField | None = None,
    ) -> None:
        images = np.asarray(images, dtype=np.int64)
        for kind, largest in ((TopKKind.POSITION, True), (TopKKind.POSITION_BOTTOM, False)):
            if kind in self._topk:
                assert maps is not None, "position mode needs the layer's maps"
                self._update_position(self._topk[kind], maps, images, largest, field or self.field)
        if self.kept_maps is not None and self.kept_maps.enabled and maps is not None:
            self._offer_maps(responses, ys, xs, maps, images)
        shape = responses.shape
        if self.options.keep_responses:
            self._kept.append((images, np.array(responses, dtype=np.float32)))
        self._pending.append(
            (
                np.ascontiguousarray(responses),  # a copy where it is a view of a whole map
                np.broadcast_to(ys, shape),
                np.broadcast_to(xs, shape),
                images,
                None if labels is None else np.asarray(labels, dtype=np.int64),
            )
        )
        # copies of maps piling up (the first batches: every entry may enter) fold early
        maps_over = self.kept_maps is not None and self.kept_maps.over
        if maps_over or sum(len(part[3]) for part in self._pending) >= self._fold_every:
            self.fold()

    def _offer_maps(
        self,
        responses: np.ndarray,
        ys: np.ndarray,
        xs: np.ndarray,
        maps: np.ndarray,
        images: np.ndarray,
    ) -> None:
        """Copy the maps of this batch's entries that may be kept (see `kept_maps`)."""
        assert self.kept_maps is not None
        for kind in KINDS:
            if kind in self._topk:
                contenders = self._topk[kind].contenders(responses, images, ys, xs)
                self.kept_maps.offer(kind, contenders, maps, images)

    def _update_position(
        self,
        topk: RunningTopK,
        maps: np.ndarray,
        images: np.ndarray,
        largest: bool,
        field: TensorField | None,
    ) -> None:
        cap = self.options.k
        if self.options.per_image_cap > 0:
            cap = min(cap, self.options.per_image_cap)
        b, c = maps.shape[:2]
        assert field is not None
        for inside, rows, cols in self._overlap_groups(field):
            part = maps[:, inside] if len(inside) != c else maps
            scores, ys, xs, valid = suppressed_candidates(part, rows, cols, cap, largest)
            full_scores = np.full((b, cap, c), -np.inf if largest else np.inf)
            full_y = np.zeros((b, cap, c), dtype=np.int64)
            full_x = np.zeros((b, cap, c), dtype=np.int64)
            full_image = np.full((b, cap, c), NO_IMAGE, dtype=np.int64)
            full_scores[:, :, inside] = np.where(valid, scores, full_scores[:, :, inside])
            full_y[:, :, inside], full_x[:, :, inside] = ys, xs
            full_image[:, :, inside] = np.where(valid, images[:, None, None], NO_IMAGE)
            topk.update(
                full_scores.reshape(b * cap, c),
                full_image.reshape(b * cap, c),
                full_y.reshape(b * cap, c),
                full_x.reshape(b * cap, c),
            )

    def merge(self, other: LayerReducer) -> None:
        """Fold in the reducer of a disjoint shard of the same layer and options."""
        if (other.name, other.channels, other.options) != (self.name, self.channels, self.options):
            raise ValueError("can only merge reducers of the same layer, channels and options")
        self.fold()
        other.fold()
        for kind, topk in self._topk.items():
            topk.merge(other._topk[kind])
        self._stats.merge(other._stats)
        if self.kept_maps is not None and other.kept_maps is not None:
            self.kept_maps.merge(other.kept_maps, self._slot_images())

    def state_dict(self, maps: bool = True) -> dict[str, np.ndarray]:
        """The accumulated state as named arrays ("top/key", "stats/fired", "maps/top/index",
        ...): pure data, so a stored checkpoint or a Ray worker's result can never execute
        code when read. `maps`: with the kept entries' activation maps (`kept_maps`)."""
        self.fold()
        state = {
            f"{kind}/{name}": a
            for kind, t in self._topk.items()
            for name, a in t.state_dict().items()
        }
        state.update({f"stats/{name}": a for name, a in self._stats.state_dict().items()})
        if maps and self.kept_maps is not None:
            state.update({f"maps/{key}": a for key, a in self.kept_maps.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore `state_dict()` of a reducer of the same layer and options (its maps, if it
        has any and this reducer keeps them)."""
        self._pending = []  # replaced by the restored state
        maps = {key[5:]: value for key, value in state.items() if key.startswith("maps/")}
        state = {key: value for key, value in state.items() if not key.startswith("maps/")}
        if self.kept_maps is not None:
            self.kept_maps = KeptMaps(self.kept_maps.bound)
            self.kept_maps.load_state_dict(maps)
        kinds = {key.split("/", 1)[0] for key in state} - {"stats"}
        keeps = {kind.value for kind in self._topk}
        if kinds != keeps:
            raise ValueError(f"state keeps {sorted(kinds)}, this scan keeps {sorted(keeps)}")
        for kind, topk in self._topk.items():
            prefix = f"{kind}/"
            topk.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
        self._stats.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("stats/")})

    def state(self) -> bytes:
        """`state_dict()` as an .npz file (read back by `load_state`), without maps: a
        checkpoint stays k x channels numbers; a resumed scan renders the masks of its
        earlier entries by running the layer."""
        return write_arrays(self.state_dict(maps=False))

    def load_state(self, data: bytes) -> None:
        """Restore a checkpoint written by `state()`; anything but plain arrays of the sizes
        this reducer keeps is refused before it is inflated (ValueError)."""
        shapes = {name: array.shape for name, array in self.state_dict(maps=False).items()}
        self.load_state_dict(read_arrays(data, shapes))

    def take_responses(self, first: int, stop: int) -> np.ndarray:
        """The responses of images first..stop-1 kept since the last call, as a float32
        [stop - first, C] block (NaN rows: images not reduced, e.g. unreadable); forgets them."""
        block = np.full((stop - first, len(self.channels)), np.nan, dtype=np.float32)
        for images, responses in self._kept:
            block[images - first] = responses
        self._kept = []
        return block

    def kinds(self) -> tuple[TopKKind, ...]:
        return tuple(self._topk)

    def entries(self, position: int, kind: TopKKind | str = TopKKind.TOP) -> list[Entry]:
        """Ranked entries of the channel at `position` in self.channels, best first."""
        if kind not in self._topk:
            kept = [str(k) for k in self._topk]
            raise KeyError(f"this scan did not keep {str(kind)!r} (kept: {kept})")
        self.fold()
        return self._topk[TopKKind(kind)].entries(position)

    def kept_map(self, kind: TopKKind, position: int, image: int) -> np.ndarray | None:
        """The activation map of a kept entry (image, channel at `position`), if kept."""
        if self.kept_maps is None or kind not in KINDS:
            return None
        self.fold()
        return self.kept_maps.get(kind, image, position)

    def top_images(self, kind: TopKKind = TopKKind.TOP) -> np.ndarray:
        """[C, k] dataset indices of each channel's kept entries (-1 for empty slots)."""
        self.fold()
        return self._topk[kind].images()

    def statistics(self, labels: np.ndarray | None = None) -> ChannelStatistics:
        """Statistics; `labels` maps dataset index -> class id (-1 unlabelled) for histograms."""
        top_labels = None
        if labels is not None and self.stats.classes:
            images = self.top_images(TopKKind.TOP)
            top_labels = np.where(images >= 0, np.asarray(labels)[np.maximum(images, 0)], -1)
        return self.stats.summary(top_labels)
