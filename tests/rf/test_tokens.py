"""Token grids in the receptive-field engine: tiny ViTs built with onnx.helper.

Before attention each grid token's field is its patch (checked against the perturbation
oracle); after attention the field stays the patch with global context; prefix tokens (CLS)
are outside the grid; a hybrid returns to the ordinary spatial state.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from maxact.server.rf import FieldError, TensorField, compute_receptive_fields
from tests.vit_models import fused_attention, hybrid, tiny_vit, with_cumsum_over_tokens

from .checks import _engine_bounds
from .oracle import oracle_fields


def _pruned(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """`model` cut down to the nodes `tensors` need (the oracle cannot make attention
    positive, and needs not: before attention it is the patch embedding's)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    needed, stack = set(), list(tensors)
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(node.input)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [n for n in model.graph.node if id(n) in needed]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    del out.graph.output[:]
    out.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    return out


def _assert_tokens_match_oracle(
    model: onnx.ModelProto, size: tuple[int, int], names: list[str]
) -> None:
    fields = compute_receptive_fields(model, size)
    oracle = oracle_fields(_pruned(model, names), (1, 3, *size), 2, 3, names)
    for name in names:
        f = fields.field(name)
        assert f.tokens is not None, name
        got = [
            np.moveaxis(f.tokens.view(a[None])[0], 2, 0) for a in oracle[name]
        ]  # [C, H, W] like the engine's
        want = _engine_bounds(f)
        for k, label in enumerate(("row lo", "row hi", "col lo", "col hi")):
            assert np.array_equal(got[k], want[k]), f"{name}: {label} differs"
        assert not f.global_context, name


BEFORE_ATTENTION = [
    "patch_tokens",
    "with_cls",
    "embedded",
    "block0.ln1",
    "block0.q",
    "block0.k",
]


@pytest.mark.parametrize("decomposed", [False, True])
@pytest.mark.parametrize("prefix", [0, 1, 3])
def test_tokens_before_attention_have_the_oracles_patch_fields(
    decomposed: bool, prefix: int
) -> None:
    model = tiny_vit(size=(32, 48), patch=8, prefix=prefix, decomposed=decomposed)
    names = [n for n in BEFORE_ATTENTION if prefix or n != "with_cls"]
    _assert_tokens_match_oracle(model, (32, 48), names)


def test_overlapping_patch_embedding_tokens_match_the_oracle() -> None:
    """The hybrid's tokens come from two 3x3 convs (stride 2): fields overlap, clip at borders."""
    _assert_tokens_match_oracle(hybrid(size=(16, 24)), (16, 24), ["tokens", "block0.ln1"])


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_sets_global_context_and_keeps_each_tokens_patch(heads: int) -> None:
    model = tiny_vit(size=(32, 32), patch=8, heads=heads, prefix=1)
    fields = compute_receptive_fields(model, (32, 32))
    before = fields.field("block0.q")
    for name in ("block0.attn_out", "block0.mlp", "block0.out", "final_ln"):
        f = fields.field(name)
        assert f.global_context, name
        assert f.tokens is not None and (f.tokens.height, f.tokens.width) == (4, 4), name
        assert f.tokens.prefix == 1, name
        assert f.box(2, 3) == before.box(2, 3) == (16, 24, 24, 32)
    assert fields.field("block0.mlp").channels == 16  # the MLP's hidden channels
    assert not fields.field("logits").spatial  # the CLS token's head: a flat unit
    assert not fields.field("cls_out").spatial


def test_token_field_describes_the_patch_grid() -> None:
    f = compute_receptive_fields(tiny_vit(size=(32, 48), patch=8, prefix=2), (32, 48)).field(
        "embedded"
    )
    assert (f.height, f.width, f.channels) == (4, 6, 8)
    assert f.tokens is not None and (f.tokens.prefix, f.tokens.axis, f.tokens.rank) == (2, 1, 3)
    rows, cols = f.geometry()
    assert (rows.size, rows.stride, rows.padding) == (8, 8, 0)
    assert (cols.size, cols.stride, cols.padding) == (8, 8, 0)
    assert f.box(3, 5) == (24, 40, 32, 48)


def test_token_view_drops_the_prefix_and_lays_tokens_on_the_grid() -> None:
    f = compute_receptive_fields(tiny_vit(size=(16, 24), patch=8, prefix=1), (16, 24)).field(
        "embedded"
    )
    assert f.tokens is not None
    out = np.arange(2 * 7 * 8, dtype=np.float32).reshape(2, 7, 8)  # [N, 1 + 2*3, C]
    grid = f.tokens.view(out)
    assert grid.shape == (2, 2, 3, 8)
    assert np.array_equal(grid[1, 1, 2], out[1, 1 + 1 * 3 + 2])


def test_hybrid_returns_to_a_spatial_tensor_after_the_tokens() -> None:
    fields = compute_receptive_fields(hybrid(size=(16, 24)), (16, 24))
    tokens = fields.field("tokens")
    back = fields.field("grid_back")
    after = fields.field("cnn3")
    assert back.tokens is None and back.spatial and back.global_context
    assert (back.height, back.width) == (8, 12)
    assert back.box(3, 4) == tokens.box(3, 4)
    rows, _ = after.geometry()
    assert (rows.size, rows.stride) == (9, 2)  # 3x3 conv on the stride-2 grid: 5 + 2*2
    assert after.global_context


def test_unsupported_op_over_tokens_fails_only_its_dependents_naming_it() -> None:
    model = with_cumsum_over_tokens(tiny_vit(size=(16, 16), patch=8), "embedded")
    fields = compute_receptive_fields(model, (16, 16))
    with pytest.raises(FieldError, match="CumSum"):
        fields.field("after_cumsum")
    assert set(fields.failed()) == {"cumsum", "after_cumsum"}
    assert isinstance(fields.field("block0.out"), TensorField)


def test_fused_attention_ops_keep_the_grid_with_global_context() -> None:
    fields = compute_receptive_fields(fused_attention(size=(16, 16), patch=4), (16, 16))
    assert not fields.field("q").global_context
    for name in ("mha", "skip_ln", "fast_gelu"):
        f = fields.field(name)
        assert f.tokens is not None and (f.height, f.width) == (4, 4), name
        assert f.global_context, name
        assert f.box(1, 2) == (4, 8, 8, 12), name
