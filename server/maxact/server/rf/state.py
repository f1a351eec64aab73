"""Internal per-tensor states of the engine: constant, spatial, tokens, flat (global), failed."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from maxact.server.rf.axis import AxisField, union_axes

if TYPE_CHECKING:
    import onnx

    from maxact.server.rf.context import Context


class Unsupported(Exception):
    """Raised by op handlers; the engine records it on the node's outputs."""


@dataclass(frozen=True)
class Const:
    """Does not depend on the image (weights, shape computations)."""


CONST = Const()


@dataclass(frozen=True)
class Group:
    """Channels [first, last] sharing one (height, width) field."""

    first: int
    last: int
    h: AxisField
    w: AxisField


@dataclass(frozen=True)
class Spatial:
    """A tensor with local fields; axes index the full tensor including batch."""

    rank: int
    c_axis: int
    h_axis: int
    w_axis: int
    channels: int
    groups: tuple[Group, ...]
    global_context: bool = False

    def with_groups(self, groups: list[Group] | tuple[Group, ...], **kw: Any) -> Spatial:
        """A copy with `groups` (merged) and the fields named in `kw` replaced."""
        return replace(self, groups=tuple(merge_groups(list(groups))), **kw)

    def union(self) -> Group:
        """All channels as one group (hull of the groups' fields)."""
        return union_groups(self.groups, 0, self.channels - 1)


@dataclass(frozen=True)
class Tokens:
    """A sequence of tokens that came from a spatial grid (a vision transformer's patches).

    `axis` is the token axis; every other non-batch axis is a channel axis (channels are
    numbered row-major over them). The first `prefix` tokens (CLS, registers) have no spatial
    field; token `prefix + r * width + c` carries the field (h[r], w[c]) of grid cell (r, c).
    """

    rank: int
    axis: int
    channels: int
    prefix: int
    h: AxisField
    w: AxisField
    global_context: bool = False
    batch: int = 0  # moved by attention's [N, T, 3, heads, d] -> [3, N, heads, T, d]

    @property
    def grid(self) -> tuple[int, int]:
        return (self.h.length, self.w.length)

    @property
    def length(self) -> int:
        """Tokens along the token axis, prefix included."""
        return self.prefix + self.h.length * self.w.length


@dataclass(frozen=True)
class Flat:
    """Depends on the whole image through a global path (GAP, Gemm, Flatten...)."""


FLAT = Flat()


@dataclass(frozen=True)
class Failed:
    """Depends on something the engine cannot trace: why, and which node."""

    reason: str
    op: str
    node: str
    output: str


State = Const | Spatial | Tokens | Flat | Failed

Handler = Callable[["Context", "onnx.NodeProto", list[State]], list[State]]


def on_image(fn: Callable[[Context, onnx.NodeProto, Spatial], list[State]]) -> Handler:
    """Handler of an op whose first input carries the image: a flat one gives flat outputs."""

    @functools.wraps(fn)
    def handler(ctx: Context, node: onnx.NodeProto, ins: list[State]) -> list[State]:
        x = ins[0]
        if isinstance(x, Flat):
            return [FLAT] * len(node.output)
        if not isinstance(x, Spatial):
            raise Unsupported("the op needs a spatial [N, C, H, W] input, got a token sequence")
        return fn(ctx, node, x)

    return handler


def union_groups(groups: tuple[Group, ...] | list[Group], first: int, last: int) -> Group:
    """One group over channels first..last whose field is the hull of `groups`."""
    if len(groups) == 1:
        g = groups[0]
        return Group(first, last, g.h, g.w)
    check_aligned([g.h for g in groups], "height")
    check_aligned([g.w for g in groups], "width")
    return Group(first, last, union_axes([g.h for g in groups]), union_axes([g.w for g in groups]))


def check_aligned(parts: list[AxisField], axis: str) -> None:
    """Paths may meet only with the same stride (different centres are fine: union)."""
    strides = {p.geom.stride for p in parts}
    if len(strides) > 1:
        text = ", ".join(str(s) for s in sorted(strides))
        raise Unsupported(f"paths meet with different {axis} strides ({text})")


def merge_groups(groups: list[Group]) -> list[Group]:
    """Join neighbouring groups that share the same field objects."""
    out: list[Group] = []
    for g in groups:
        if out and out[-1].h is g.h and out[-1].w is g.w and out[-1].last + 1 == g.first:
            out[-1] = Group(out[-1].first, g.last, g.h, g.w)
        else:
            out.append(g)
    return out


def slice_groups(groups: tuple[Group, ...], first: int, last: int) -> list[Group]:
    """Groups restricted to channels first..last, renumbered from 0."""
    out = []
    for g in groups:
        a, b = max(g.first, first), min(g.last, last)
        if a <= b:
            out.append(Group(a - first, b - first, g.h, g.w))
    return out


def groups_in(groups: tuple[Group, ...], first: int, last: int) -> list[Group]:
    """Groups intersecting channels first..last (not renumbered)."""
    return [g for g in groups if g.first <= last and g.last >= first]


def map_axes(
    groups: tuple[Group, ...],
    fh: Callable[[AxisField], AxisField],
    fw: Callable[[AxisField], AxisField],
) -> list[Group]:
    """Apply per-axis ops to every group, once per distinct field object."""
    cache: dict[tuple[int, str], AxisField] = {}

    def once(f: Callable[[AxisField], AxisField], a: AxisField, key: str) -> AxisField:
        k = (id(a), key)
        if k not in cache:
            cache[k] = f(a)
        return cache[k]

    return [Group(g.first, g.last, once(fh, g.h, "h"), once(fw, g.w, "w")) for g in groups]
