"""Running top-k per channel: vectorised, deterministic on ties, and mergeable.

Memory is k x channels whatever the dataset size. Two reducers fed disjoint shards merge into
exactly the reducer of the union, because selection is a total order on (score, image, y, x).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from maxact.server.errors import invalid_argument

NO_IMAGE = np.iinfo(np.int64).max  # the image index of an empty slot
# more candidates per channel than this (and than 2k) are partitioned before sorting
PRESELECT_ABOVE = 64


# A request's k: memory is k x channels, so it is bounded for every scan the same way.
MAX_K = 1000


def check_k(k: int) -> int:
    """`k` when it is in 1..MAX_K, else INVALID_ARGUMENT naming the range."""
    if not 0 < k <= MAX_K:
        raise invalid_argument("K_OUT_OF_RANGE", f"k must be in 1..{MAX_K}, got {k}")
    return k


@dataclass(frozen=True)
class Entry:
    """One kept response: the score as the model produced it, and where."""

    score: float
    image: int
    y: int
    x: int


def _packed(keep: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """`arrays` ([rows, N] each) narrowed to the columns `keep` marks, each row's kept
    candidates first and in their order; rows with fewer are padded with some of their others
    (real candidates too, only worse ones, so offering them changes nothing)."""
    width = int(keep.sum(axis=1).max())
    if width == keep.shape[1]:
        return list(arrays)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    return [np.take_along_axis(a, order, axis=1) for a in arrays]


class RunningTopK:
    """The k best (largest, or smallest when `largest=False`) responses per channel.

    Ties: the earlier image wins, then the earlier unit in row-major order.
    """

    def __init__(self, channels: int, k: int, largest: bool = True) -> None:
        if k <= 0 or channels <= 0:
            raise ValueError("k and channels must be positive")
        self.channels = channels
        self.k = k
        self.largest = largest
        self._key = np.full((channels, k), -np.inf)
        self._image = np.full((channels, k), NO_IMAGE, dtype=np.int64)
        self._y = np.zeros((channels, k), dtype=np.int64)
        self._x = np.zeros((channels, k), dtype=np.int64)

    def _candidates(
        self, scores: np.ndarray, images: np.ndarray, ys: np.ndarray, xs: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """(key, images, ys, xs) as [channels, N] arrays in the order's terms (NaN: -inf)."""
        images = np.asarray(images, dtype=np.int64)
        if images.ndim == 1:
            images = np.broadcast_to(images[:, None], scores.shape)
        key = scores if self.largest else -scores
        key = np.where(np.isnan(key), -np.inf, key).T
        ys = np.broadcast_to(ys, scores.shape).T
        xs = np.broadcast_to(xs, scores.shape).T
        return key, images.T, ys, xs

    def contenders(
        self, scores: np.ndarray, images: np.ndarray, ys: np.ndarray, xs: np.ndarray
    ) -> np.ndarray:
        """[N, channels]: which of these candidates would enter the kept slots now. Slots only
        improve, so a candidate kept after any later update is among them."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size == 0:
            return np.zeros(scores.shape, dtype=bool)
        beats: np.ndarray = self._beats_kth(*self._candidates(scores, images, ys, xs))
        return np.ascontiguousarray(beats.T)

    def update(
        self, scores: np.ndarray, images: np.ndarray, ys: np.ndarray, xs: np.ndarray
    ) -> None:
        """Offer N candidates per channel: arrays of shape [N, channels] (images may be [N])."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size == 0:
            return
        key, images, ys, xs = self._candidates(scores, images, ys, xs)
        # only candidates that beat a channel's k-th kept slot in the total order can enter
        beats = self._beats_kth(key, images, ys, xs)
        rows = np.flatnonzero(beats.any(axis=1))
        if rows.size == 0:
            return
        if rows.size != self.channels:
            key, images, ys, xs, beats = (a[rows] for a in (key, images, ys, xs, beats))
        key, images, ys, xs = _packed(beats, key, images, ys, xs)
        width = key.shape[1]
        if width > max(2 * self.k, PRESELECT_ABOVE):
            self._offer_preselected(rows, key, images, ys, xs)
        else:
            self._offer(rows, key, images, ys, xs)

    def _beats_kth(
        self, key: np.ndarray, images: np.ndarray, ys: np.ndarray, xs: np.ndarray
    ) -> np.ndarray:
        """[channels, N]: the candidate precedes the channel's k-th kept slot in the order
        (key descending, then image, y, x ascending); an empty slot is beaten by any image."""
        kth_key, kth_image, kth_y, kth_x = (
            a[:, -1:] for a in (self._key, self._image, self._y, self._x)
        )
        earlier_unit = (ys < kth_y) | ((ys == kth_y) & (xs < kth_x))
        earlier = (images < kth_image) | ((images == kth_image) & earlier_unit)
        better: np.ndarray = ((key > kth_key) | ((key == kth_key) & earlier)) & (images != NO_IMAGE)
        return better

    def _offer(
        self,
        rows: np.ndarray,
        key: np.ndarray,
        images: np.ndarray,
        ys: np.ndarray,
        xs: np.ndarray,
    ) -> None:
        """Merge candidates (row i of each array: channel rows[i]) with the kept slots."""
        if rows.size == self.channels:
            kept = (self._key, self._image, self._y, self._x)
        else:
            kept = (self._key[rows], self._image[rows], self._y[rows], self._x[rows])
        merged_key, merged_image, merged_y, merged_x = (
            np.concatenate([mine, theirs], axis=1)
            for mine, theirs in zip(kept, (key, images, ys, xs), strict=True)
        )
        self._select(
            merged_key,
            merged_image,
            merged_y,
            merged_x,
            None if rows.size == self.channels else rows,
        )

    def _offer_preselected(
        self,
        rows: np.ndarray,
        key: np.ndarray,
        images: np.ndarray,
        ys: np.ndarray,
        xs: np.ndarray,
    ) -> None:
        """`_offer` for many candidates per channel: a linear-time partition finds each row's
        k-th best value, and only the candidates at or above it (ties at the k-th value
        included, so the order can decide between them) are sorted with the kept slots."""
        key = np.where(images == NO_IMAGE, -np.inf, key)
        part = np.argpartition(-key, self.k - 1, axis=1)[:, : self.k]
        kth = np.take_along_axis(key, part, axis=1).min(axis=1)
        contenders = key >= kth[:, None]
        counts = contenders.sum(axis=1)
        narrow = counts <= max(4 * self.k, PRESELECT_ABOVE)
        for group in (narrow, ~narrow):  # rows tied all along (dead channels) sort apart
            if group.any():
                picked = (a[group] for a in (key, images, ys, xs))
                self._offer(rows[group], *_packed(contenders[group], *picked))

    def merge(self, other: RunningTopK) -> None:
        """Fold in a reducer of a disjoint shard (image indices global to the union)."""
        if (other.channels, other.k, other.largest) != (self.channels, self.k, self.largest):
            raise ValueError("can only merge reducers with the same channels, k and direction")
        self._select(
            np.concatenate([self._key, other._key], axis=1),
            np.concatenate([self._image, other._image], axis=1),
            np.concatenate([self._y, other._y], axis=1),
            np.concatenate([self._x, other._x], axis=1),
        )

    def _select(
        self,
        key: np.ndarray,
        image: np.ndarray,
        y: np.ndarray,
        x: np.ndarray,
        rows: np.ndarray | None = None,
    ) -> None:
        """Keep the k best of each row; `rows`: which channels these rows are (default all)."""
        order = np.lexsort((x, y, image, -key), axis=-1)[:, : self.k]
        picked = [np.take_along_axis(a, order, axis=1) for a in (key, image, y, x)]
        if rows is None:
            self._key, self._image, self._y, self._x = picked
            return
        self._key[rows], self._image[rows], self._y[rows], self._x[rows] = picked

    def state_dict(self) -> dict[str, np.ndarray]:
        """The kept slots as plain arrays (checkpoints, Ray shards): data, never objects."""
        return {"key": self._key, "image": self._image, "y": self._y, "x": self._x}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore `state_dict()` of a reducer with the same channels and k."""
        shape = (self.channels, self.k)
        arrays = [np.asarray(state[name]) for name in ("key", "image", "y", "x")]
        if any(a.shape != shape for a in arrays):
            raise ValueError(f"top-k state has shape {arrays[0].shape}, expected {shape}")
        key, image, y, x = arrays
        self._key = key.astype(np.float64)
        self._image, self._y, self._x = (a.astype(np.int64) for a in (image, y, x))

    def entries(self, channel: int = 0) -> list[Entry]:
        """Best first; empty slots (fewer candidates than k) left out."""
        result = []
        for j in range(self.k):
            image = int(self._image[channel, j])
            if image == NO_IMAGE:
                break
            key = float(self._key[channel, j])
            result.append(
                Entry(
                    key if self.largest else -key,
                    image,
                    int(self._y[channel, j]),
                    int(self._x[channel, j]),
                )
            )
        return result

    def kept_images(self) -> np.ndarray:
        """[channels, k] image index of every kept slot (NO_IMAGE where empty)."""
        return self._image

    def images(self) -> np.ndarray:
        """[channels, k] image index of every kept slot (-1 where empty)."""
        return np.where(self._image == NO_IMAGE, -1, self._image)
