"""Images a client streams for a top-k query, fed to the scan as they arrive.

The scan thread pulls the next image from the call's async iterator through the event loop
(`streaming.BlockingPull`), one at a time, only when the reader has room in its window: the
transport's flow control then holds the client back, so the server never buffers more than
the reader's window.
Bytes are decoded from memory (nothing is written to disk unless the client asked to keep
the images as a dataset: `DatasetWriter`) and kept only while needed: for
images not reduced yet (in flight) and for images the ranking currently holds, whose patches
are cropped at the end. Ids are remembered to refuse duplicates (a set of strings).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial

from PIL import Image

from maxact.server import limits
from maxact.server.core.streaming import BlockingPull
from maxact.server.data.dataset_writer import DatasetWriter
from maxact.server.data.reader import ImageSource
from maxact.server.errors import invalid_argument
from maxact.server.scan.neuron import HeldWhileNeeded


@dataclass(frozen=True)
class ClientImage:
    """One image as the client sent it: its id (unique in the call), bytes and label."""

    id: str
    data: bytes
    label: str = ""


class ClientImages:
    """The client's images as ImageSources in its order (index 0, 1, ...). Iterate it in the
    scan thread; `stop()` from any thread ends the iteration."""

    def __init__(
        self,
        images: AsyncIterator[ClientImage],
        loop: asyncio.AbstractEventLoop,
        keep: DatasetWriter | None = None,
    ) -> None:
        self._pull = BlockingPull(images, loop)
        self._keep = keep
        self._data: HeldWhileNeeded[bytes] = HeldWhileNeeded()
        self._seen: set[str] = set()
        self.received = 0
        """Images received so far (what progress reports as images_total)."""

    def __iter__(self) -> Iterator[ImageSource]:
        while not self._pull.stopped:
            image = self._pull.next()
            if image is None:
                return
            yield self._accept(image)

    def _accept(self, image: ClientImage) -> ImageSource:
        number = self.received + 1
        if not image.id:
            raise invalid_argument("IMAGE_ID_REQUIRED", f"image {number} has an empty id")
        if image.id in self._seen:
            raise invalid_argument(
                "DUPLICATE_IMAGE_ID",
                f"image id {image.id!r} was sent twice (image {number}); ids must be unique",
                image=image.id,
            )
        self._seen.add(image.id)
        held = self._data.total(len) + len(image.data)
        if held > limits.current().max_request_bytes:
            raise limits.request_bytes_error(held)
        if self._keep is not None:
            self._keep.add(image.id, image.data, image.label)
        index = self.received
        self._data.add(index, image.data)
        self.received += 1
        return self.source(index, image.id)

    def stop(self) -> None:
        """End the iteration now, also while it waits for the client's next message."""
        self._pull.stop()

    def source(self, index: int, image_id: str) -> ImageSource:
        """The image at `index`, decoded from the bytes held in memory."""
        return ImageSource(index, image_id, partial(self._open, index, image_id))

    def _open(self, index: int, image_id: str) -> Image.Image:
        data = self._data.get(index)
        if data is None:
            raise LookupError(f"the bytes of image {image_id!r} were released")
        return Image.open(io.BytesIO(data))

    def reduced(self, indices: list[int], kept: Callable[[], set[int]]) -> None:
        """`indices` were reduced or skipped: release the bytes of every reduced image the
        ranking (`kept()`) does not hold."""
        self._data.reduced(indices, kept)
