"""Running the scan session through onnxruntime IO binding.

On a GPU, `session.run` with numpy arrays allocates a device input per call, copies it, and copies
every output back through a fresh host buffer. With IO binding the input lives in one device
buffer per batch shape, refilled in place (`OrtValue.update_inplace`), and the outputs (the
in-graph reductions: [N, C]-sized) are bound to the host. On the CPU provider the same code runs
with a host buffer, which is how the tests exercise this path.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from maxact.server.models.runtime import CUDA

CPU_BATCH = 16
GPU_BATCH = 64  # enough images per run to keep a GPU busy; outputs are [N, C], memory is small


def device_batch_size(on_gpu: bool) -> int:
    """The default batch: small on CPUs (latency, cache), large on GPUs (occupancy)."""
    return GPU_BATCH if on_gpu else CPU_BATCH


class BoundRunner:
    """Runs `session` on host batches with IO binding; outputs come back as numpy arrays."""

    def __init__(self, session: ort.InferenceSession, input_name: str, outputs: list[str]):
        self.session = session
        self.input_name = input_name
        self.outputs = list(outputs)
        on_gpu = CUDA in session.get_providers()
        self.device = "cuda" if on_gpu else "cpu"
        self._binding = session.io_binding()
        self._input: ort.OrtValue | None = None
        self._input_shape: tuple[int, ...] = ()

    def _device_input(self, array: np.ndarray) -> ort.OrtValue:
        """The device buffer for this batch shape, refilled with `array` (one host->device copy)."""
        if self._input is None or self._input_shape != array.shape:
            self._input = ort.OrtValue.ortvalue_from_shape_and_type(
                array.shape, array.dtype, self.device, 0
            )
            self._input_shape = array.shape
        self._input.update_inplace(array)
        return self._input

    def run(self, array: np.ndarray, run_options: ort.RunOptions | None = None) -> list[np.ndarray]:
        array = np.ascontiguousarray(array)
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_ortvalue_input(self.input_name, self._device_input(array))
        for name in self.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding, run_options)
        return binding.copy_outputs_to_cpu()
