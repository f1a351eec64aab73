"""Running the scan session through onnxruntime IO binding.

On a GPU, `session.run` with numpy arrays allocates a device input per call, copies it, and copies
every output back through a fresh host buffer. With IO binding the input lives in one device
buffer per batch shape, refilled in place, and the outputs (the in-graph reductions:
[N, C]-sized) are bound to the host. Where the provider offers page-locked host memory (CUDA on
onnxruntime >= 1.32) the batch goes through a pinned staging buffer (`pinned.PinnedStaging`);
otherwise it is copied from pageable memory (`OrtValue.update_inplace`). On the CPU provider the
same code runs with a host buffer, which is how the tests exercise this path.
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from maxact.server.models.runtime import CUDA
from maxact.server.scan.pinned import PinnedStaging

log = logging.getLogger("maxact.server")

CPU_BATCH = 16
GPU_BATCH = 64  # enough images per run to keep a GPU busy; outputs are [N, C], memory is small


def device_batch_size(on_gpu: bool) -> int:
    """The default batch: small on CPUs (latency, cache), large on GPUs (occupancy)."""
    return GPU_BATCH if on_gpu else CPU_BATCH


class BoundRunner:
    """Runs `session` on host batches with IO binding; outputs come back as numpy arrays.

    `pinned`: stage inputs through page-locked host memory when the session's provider offers it
    (default: on a GPU); `self.pinned` says whether it is in use."""

    def __init__(
        self,
        session: ort.InferenceSession,
        input_name: str,
        outputs: list[str],
        pinned: bool | None = None,
        feeds: dict[str, np.ndarray] | None = None,
    ):
        self.session = session
        self.feeds = dict(feeds or {})  # small host inputs (channel subset, unit), every run
        self.input_name = input_name
        self.outputs = list(outputs)
        providers = session.get_providers()
        on_gpu = CUDA in providers
        self.device = "cuda" if on_gpu else "cpu"
        self._binding = session.io_binding()
        self._input: ort.OrtValue | None = None
        self._input_shape: tuple[int, ...] = ()
        self._input_dtype: np.dtype | None = None
        wanted = on_gpu if pinned is None else pinned
        self._staging = PinnedStaging.for_provider(providers[0], self.device) if wanted else None

    @property
    def pinned(self) -> bool:
        """Whether batches go to the device through pinned host memory."""
        return self._staging is not None

    def _device_input(self, array: np.ndarray) -> ort.OrtValue:
        """The device buffer for this batch shape, refilled with `array` (one host->device copy)."""
        if self._staging is not None:
            try:
                return self._staging.device_input(array)
            except Exception as error:  # e.g. no copy between these memories in this build
                log.warning(
                    "pinned host staging unavailable (%s); copying from pageable memory", error
                )
                self._staging = None
        if self._input is None or (self._input_shape, self._input_dtype) != (
            array.shape,
            array.dtype,
        ):
            self._input = ort.OrtValue.ortvalue_from_shape_and_type(
                array.shape, array.dtype, self.device, 0
            )
            self._input_shape = array.shape
            self._input_dtype = array.dtype
        self._input.update_inplace(array)
        return self._input

    def run(self, array: np.ndarray, run_options: ort.RunOptions | None = None) -> list[np.ndarray]:
        array = np.ascontiguousarray(array)
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_ortvalue_input(self.input_name, self._device_input(array))
        for name, value in self.feeds.items():
            binding.bind_cpu_input(name, value)
        for name in self.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding, run_options)
        outputs: list[np.ndarray] = binding.copy_outputs_to_cpu()
        return outputs
