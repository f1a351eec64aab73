"""Images a client streams to TopKService.StreamTopKImages, fed to the scan as they arrive.

The scan thread pulls the next request message from the RPC's async request iterator through
the event loop (`streaming.BlockingPull`), one message at a time, only when the reader has room
in its window: gRPC flow control then holds the client back, so the server never buffers more
than the reader's window.
Bytes are decoded from memory (nothing is written to disk unless the client asked to keep
the images as a dataset: `DatasetWriter`) and kept only while needed: for
images not reduced yet (in flight) and for images the ranking currently holds, whose patches
are cropped at the end. Ids are remembered to refuse duplicates (a set of strings).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial

from PIL import Image

from maxact.server import limits
from maxact.server.data.dataset_writer import DatasetWriter
from maxact.server.data.reader import ImageSource, open_bytes
from maxact.server.errors import invalid_argument
from maxact.server.scan.neuron import HeldWhileNeeded
from maxact.server.service.streaming import BlockingPull
from maxact.v1 import topk_service_pb2 as pb


class ClientImages:
    """The images after the query message, as ImageSources in the client's order (index 0, 1,
    ...). Iterate it in the scan thread; `stop()` from any thread ends the iteration."""

    def __init__(
        self,
        requests: AsyncIterator[pb.StreamTopKImagesRequest],
        loop: asyncio.AbstractEventLoop,
        keep: DatasetWriter | None = None,
    ) -> None:
        self._requests = BlockingPull(requests, loop)
        self._keep = keep
        self._data: HeldWhileNeeded[bytes] = HeldWhileNeeded()
        self._seen: set[str] = set()
        self.received = 0
        """Images received so far (what progress reports as images_total)."""

    def __iter__(self) -> Iterator[ImageSource]:
        while not self._requests.stopped:
            message = self._requests.next()
            if message is None:
                return
            yield self._accept(message)

    def _accept(self, message: pb.StreamTopKImagesRequest) -> ImageSource:
        kind = message.WhichOneof("message")
        number = self.received + 1
        if kind != "image":
            raise invalid_argument(
                "IMAGE_EXPECTED",
                f"after the first message (the query) every message must be an image; "
                f"image message {number} is {'a ' + kind if kind else 'empty'}",
            )
        image = message.image
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
        self._requests.stop()

    def source(self, index: int, image_id: str) -> ImageSource:
        """The image at `index`, decoded from the bytes held in memory."""
        return ImageSource(index, image_id, partial(self._open, index, image_id))

    def _open(self, index: int, image_id: str) -> Image.Image:
        data = self._data.get(index)
        if data is None:
            raise LookupError(f"the bytes of image {image_id!r} were released")
        return open_bytes(data)

    def reduced(self, indices: list[int], kept: Callable[[], set[int]]) -> None:
        """`indices` were reduced or skipped: release the bytes of every reduced image the
        ranking (`kept()`) does not hold."""
        self._data.reduced(indices, kept)
