"""Page-locked (pinned) host staging buffers for the GPU IO-binding path.

A host->device copy from ordinary pageable numpy memory makes the CUDA driver stage it through
its own small page-locked bounce buffer, chunk by chunk; from page-locked memory the copy is one
DMA at the full PCIe bandwidth. onnxruntime (>= 1.32) hands out page-locked host memory through
the CUDA execution provider's `OrtEpDevice`: the allocator behind its HOST_ACCESSIBLE memory info
("zero-copy numpy interop"). Each batch is therefore written ONCE into a pinned buffer (through a
numpy view of that memory) and onnxruntime copies it to the device buffer the session reads
(`onnxruntime.copy_tensors`, its documented copy between an EP's memory kinds; without a stream it
is synchronous, so the pinned buffer can be refilled as soon as it returns).

Where there is no such memory (the CPU provider, an older onnxruntime, a build whose CUDA provider
is not an EP device) `pinned_memory_info` returns None and the caller keeps copying from pageable
memory.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import onnxruntime as ort


def _ep_device(ep_name: str) -> Any | None:
    """The execution provider's `OrtEpDevice` that offers host-accessible memory, or None.

    Device 0 first: sessions run on it unless told otherwise."""
    if not _api_present():
        return None
    memory_type = ort.OrtDeviceMemoryType
    try:
        devices = [d for d in ort.get_ep_devices() if d.ep_name == ep_name]
        offering = [d for d in devices if d.memory_info(memory_type.HOST_ACCESSIBLE) is not None]
        offering.sort(key=lambda d: _device_id(d.memory_info(memory_type.DEFAULT)))
    except Exception:  # device discovery failing means "no pinned memory", not a failed scan
        return None
    return offering[0] if offering else None


def _api_present() -> bool:
    """onnxruntime has the EP-device API, allocation by memory info and `copy_tensors`."""
    allocate = getattr(ort.OrtValue, "ortvalue_from_shape_and_type", None)
    return (
        hasattr(ort, "OrtDeviceMemoryType")
        and hasattr(ort, "get_ep_devices")
        and hasattr(ort, "copy_tensors")
        and allocate is not None
        and "memory_info" in inspect.signature(allocate).parameters
    )


def _device_id(info: Any | None) -> int:
    return 0 if info is None else int(getattr(info, "device_id", 0))


def pinned_memory_info(ep_name: str) -> Any | None:
    """`ep_name`'s HOST_ACCESSIBLE (page-locked for CUDA) memory info; None when it has none."""
    device = _ep_device(ep_name)
    return None if device is None else device.memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)


def aliasing_view(value: ort.OrtValue) -> np.ndarray | None:
    """A writable numpy array over `value`'s own memory, or None when `.numpy()` is a copy.

    Checked by address: a copy would silently drop every write into it."""
    view: np.ndarray = value.numpy()
    if view.ctypes.data != value.data_ptr() or not view.flags.writeable:
        return None
    return view


class PinnedStaging:
    """One pinned host buffer and one device buffer per batch shape, reused batch after batch."""

    def __init__(self, host_info: Any, device_info: Any | None, device_type: str):
        self._host_info = host_info
        # the device buffer comes from the same EP device, so that onnxruntime has the copy
        # between the two; without a DEFAULT memory info, from the provider's device allocator
        self._device_info = device_info
        self._device_type = device_type
        self._key: tuple[tuple[int, ...], np.dtype] | None = None
        self._host: ort.OrtValue | None = None
        self._view: np.ndarray | None = None
        self._device: ort.OrtValue | None = None

    @classmethod
    def for_provider(cls, ep_name: str, device_type: str) -> PinnedStaging | None:
        """Staging for a session whose first provider is `ep_name`; None without pinned memory."""
        device = _ep_device(ep_name)
        if device is None:
            return None
        memory = ort.OrtDeviceMemoryType
        return cls(
            device.memory_info(memory.HOST_ACCESSIBLE),
            device.memory_info(memory.DEFAULT),
            device_type,
        )

    def _allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._host = ort.OrtValue.ortvalue_from_shape_and_type(
            shape, dtype, memory_info=self._host_info
        )
        self._view = aliasing_view(self._host)
        if self._device_info is not None:
            self._device = ort.OrtValue.ortvalue_from_shape_and_type(
                shape, dtype, memory_info=self._device_info
            )
        else:
            self._device = ort.OrtValue.ortvalue_from_shape_and_type(
                shape, dtype, self._device_type, 0
            )
        self._key = (shape, dtype)

    def device_input(self, array: np.ndarray) -> ort.OrtValue:
        """The device buffer for `array`'s shape, filled with it through the pinned buffer."""
        if self._key != (array.shape, array.dtype):
            self._allocate(array.shape, array.dtype)
        assert self._host is not None and self._device is not None
        if self._view is not None:
            np.copyto(self._view, array)  # the one host copy: pageable -> pinned
        else:
            self._host.update_inplace(array)
        ort.copy_tensors([self._host], [self._device], None)  # pinned -> device, one DMA
        return self._device
