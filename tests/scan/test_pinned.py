"""Pinned host staging for the GPU IO-binding path, as far as the CPU provider can show it.

onnxruntime offers page-locked host memory only through a GPU execution provider's EP device:
on the CPU provider the lookup finds none, so BoundRunner must keep its pageable path and give
exactly what `session.run` gives, also when staging is asked for or fails on its first batch.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from maxact.server.models.runtime import CPU, create_session
from maxact.server.scan.binding import BoundRunner
from maxact.server.scan.pinned import PinnedStaging, aliasing_view, pinned_memory_info
from tests.onnx_models import finish, random_cnn

LAYERS = ["conv_a", "relu_b", "logits"]


def _exposed(model: onnx.ModelProto, layers: list[str]) -> onnx.ModelProto:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    known = {o.name for o in exposed.graph.output}
    for layer in layers:
        if layer not in known:
            exposed.graph.output.append(
                helper.make_tensor_value_info(layer, TensorProto.FLOAT, None)
            )
    return exposed


def _uint8_model() -> onnx.ModelProto:
    """uint8 NHWC pixels -> float -> per-channel max: the engine's uint8 feed in miniature."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMax", ["as_float"], ["peak"], axes=[1, 2], keepdims=0),
        ],
        "uint8_feed",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", 5, 7, 3])],
        [helper.make_tensor_value_info("peak", TensorProto.FLOAT, ["N", 3])],
    )
    return finish(graph)


def _assert_same(runner: BoundRunner, session: ort.InferenceSession, batch: np.ndarray) -> None:
    name = session.get_inputs()[0].name
    expected = session.run(runner.outputs, {name: batch})
    got = runner.run(batch)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pinned_memory_lookup_finds_none_on_the_cpu_provider() -> None:
    assert pinned_memory_info(CPU) is None
    assert PinnedStaging.for_provider(CPU, "cpu") is None


def test_bound_runner_with_staging_requested_equals_session_run_on_cpu() -> None:
    session = create_session(_exposed(random_cnn(seed=5, size=16), LAYERS), "cpu")
    runner = BoundRunner(session, "input", LAYERS, pinned=True)
    assert not runner.pinned  # the CPU provider offers no page-locked memory
    rng = np.random.default_rng(1)
    for count in (4, 4, 3, 4):  # the per-shape buffer is reused, then replaced, then again
        _assert_same(runner, session, rng.normal(0, 1, (count, 3, 16, 16)).astype(np.float32))


def test_bound_runner_feeds_uint8_batches_like_session_run() -> None:
    session = create_session(_uint8_model(), "cpu")
    runner = BoundRunner(session, "pixels", ["peak"], pinned=True)
    rng = np.random.default_rng(2)
    for count in (2, 2, 5):
        _assert_same(runner, session, rng.integers(0, 256, (count, 5, 7, 3), dtype=np.uint8))


def test_staging_that_fails_on_its_first_batch_falls_back_to_pageable_copies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A memory info onnxruntime has no allocator for (the CPU session's own input memory):
    the first batch's allocation raises, the runner drops staging and still answers."""
    session = create_session(_exposed(random_cnn(seed=6, size=16), LAYERS), "cpu")
    runner = BoundRunner(session, "input", LAYERS, pinned=True)
    host_info = session.get_input_memory_infos()[0]
    runner._staging = PinnedStaging(host_info, None, "cpu")
    assert runner.pinned
    batch = np.random.default_rng(3).normal(0, 1, (3, 3, 16, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="maxact.server"):
        _assert_same(runner, session, batch)
    assert not runner.pinned
    assert "No shared allocator" in caplog.text  # onnxruntime's own reason, passed on
    _assert_same(runner, session, batch[:2])


def test_aliasing_view_writes_into_the_ortvalue_itself() -> None:
    value = ort.OrtValue.ortvalue_from_shape_and_type([2, 3], np.float32)
    view = aliasing_view(value)
    assert view is not None
    view[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(value.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
