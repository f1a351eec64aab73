"""What a new onnxruntime session costs is estimated before it is built (`session_cost`), the
cache charges the estimate until the session's first run measures it, and model runs reserve
their estimate scaled by what their runs were measured to take (`run_peaks`). Real onnxruntime
sessions of a detector-like test model, no server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxact.server.graph.surgery import prune_to_outputs
from maxact.server.models.registry import LoadedModel, ModelRegistry
from maxact.server.models.run_peaks import MAX_FACTOR, MIN_ESTIMATE, RunPeaks
from maxact.server.models.session_cost import COLD_RATE, pruned_size_bytes
from maxact.server.ops.process import reset_peak_resident
from tests.onnx_models import save
from tests.server.test_memory_growth import detector_like_model

SIZE = (256, 256)
MIB = 1024 * 1024


def _model(tmp_path: Path) -> LoadedModel:
    save(detector_like_model(), tmp_path, "det")
    return ModelRegistry(tmp_path, device="cpu").get("det")


def _size_bytes(model: LoadedModel, layer: str, size: tuple[int, int]) -> int:
    return pruned_size_bytes(prune_to_outputs(model.proto, (layer,)), model.view(size).shapes)


def _first_run(model: LoadedModel, layer: str, size: tuple[int, int]) -> None:
    session = model.session((layer,), size)
    batch = np.random.default_rng(0).normal(size=(2, 3, *size)).astype(np.float32)
    model.sessions.first_run(session, lambda: session.run([layer], {"image": batch}))


def test_a_deeper_layer_set_is_larger_and_so_is_a_larger_input(tmp_path: Path) -> None:
    model = _model(tmp_path)
    sizes = [_size_bytes(model, layer, SIZE) for layer in ("relu0", "relu1", "relu2", "relu3")]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert _size_bytes(model, "relu3", (512, 512)) > _size_bytes(model, "relu3", SIZE)


def test_a_deeper_layer_set_is_estimated_at_least_at_a_shallower_ones_measured_cost(
    tmp_path: Path,
) -> None:
    model = _model(tmp_path)
    _first_run(model, "relu1", SIZE)
    measured = model.sessions.costs.last("det")
    assert measured is not None
    size_bytes, cost = measured
    assert cost > 0 and size_bytes == _size_bytes(model, "relu1", SIZE)
    deeper = model.sessions.costs.estimate("det", _size_bytes(model, "relu3", SIZE))
    assert deeper >= cost


def test_a_new_session_is_charged_its_estimate_until_its_first_run_measures_it(
    tmp_path: Path,
) -> None:
    """Estimated at a large input (cold: COLD_RATE per byte, nothing measured yet), run
    first at a small one: charged the estimate before the run, what it really took after."""
    model = _model(tmp_path)
    large = (1024, 1024)
    estimate = int(COLD_RATE * _size_bytes(model, "relu3", large))
    assert estimate > 2 * 48 * MIB  # the [48, 512, 512] float32 maps alone are 48 MiB
    session = model.session(("relu3",), large)
    assert model.sessions.bytes >= estimate
    small = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    model.sessions.first_run(session, lambda: session.run(["relu3"], {"image": small}))
    measured = model.sessions.costs.last("det")
    assert measured is not None
    assert 0 < model.sessions.bytes == measured[1] < estimate


def test_a_run_that_peaks_at_twice_its_estimate_scales_the_models_reservations_by_two() -> None:
    if not reset_peak_resident():
        pytest.skip("no resident-memory high-water mark to reset here (/proc/self/clear_refs)")
    peaks = RunPeaks()
    assert peaks.factor() == 1.0
    estimate = 32 * MIB
    with peaks.measured(estimate, lambda: True):
        block = np.ones(2 * estimate // 8)  # 64 MiB, every page touched
        assert block.sum() > 0
        del block
    assert 1.8 <= peaks.factor() <= 2.6


def test_the_scaling_is_bounded_and_ignores_runs_too_small_to_measure() -> None:
    peaks = RunPeaks()
    peaks.record(MIN_ESTIMATE // 2, 100 * MIN_ESTIMATE)  # allocator noise, not a ratio
    assert peaks.factor() == 1.0
    peaks.record(MIN_ESTIMATE, MIN_ESTIMATE // 2)  # below the estimate: never scaled down
    assert peaks.factor() == 1.0
    peaks.record(MIN_ESTIMATE, 100 * MIN_ESTIMATE)
    assert peaks.factor() == MAX_FACTOR
