"""Top-k streams: scan a server-side dataset or images the client streams for one neuron, and
yield domain events (progress, partial rankings, skipped images, patches, done).

The scan runs in its own thread through `streaming.run_in_thread`, which also stops it when
the consumer goes away. Client-streamed images are scanned as they arrive (see
`client_images`); their progress reports images_total = the images received so far, since
the end is not known in advance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace

from maxact.common.defaults import DEFAULT_K
from maxact.common.records import ImageSkipped
from maxact.server.core.client_images import ClientImage, ClientImages
from maxact.server.core.streaming import run_in_thread, stream_slots, throttled
from maxact.server.core.validate import (
    ServerState,
    check_channel,
    check_unit,
    find_layer,
    load_model,
    require_field,
)
from maxact.server.data.dataset_writer import DatasetWriter
from maxact.server.data.datasets import Dataset, dataset_sources
from maxact.server.data.preprocess import Preprocessing, ResolvedPreprocessing
from maxact.server.data.reader import ImageSource
from maxact.server.errors import failed_precondition, invalid_argument
from maxact.server.patches.crop import PatchImage, PatchRenderer
from maxact.server.patches.render import RenderOptions
from maxact.server.scan.engine import Total
from maxact.server.scan.neuron import Hit, NeuronQuery, NeuronScan, ScanCallbacks, ScanCancelled
from maxact.server.scan.reducers import check_k


@dataclass(frozen=True)
class TopKQuestion:
    """Which neuron of which model, ranked how, over images preprocessed and cropped how;
    `neuron.k` 0 means the default k."""

    model: str
    neuron: NeuronQuery
    preprocessing: Preprocessing
    render: RenderOptions


@dataclass(frozen=True)
class Progress:
    images_scanned: int
    images_total: int
    images_failed: int
    # set on the stream's first event, before any image is read (default preprocessing)
    preprocessing_warning: str = ""


@dataclass(frozen=True)
class PartialRanking:
    """The ranking so far (sent now and then while the scan runs)."""

    hits: list[Hit]
    images_scanned: int


@dataclass(frozen=True)
class PatchReady:
    """One final hit with its rendered patch."""

    hit: Hit
    patch: PatchImage


@dataclass(frozen=True)
class Done:
    images_scanned: int
    images_failed: int
    query: NeuronQuery
    preprocessing: ResolvedPreprocessing
    preprocessing_warning: str


TopKEvent = Progress | PartialRanking | ImageSkipped | PatchReady | Done


@dataclass(frozen=True)
class _Prepared:
    scan: NeuronScan
    renderer: PatchRenderer
    warning: str  # the default-preprocessing warning ("" if none)


class TopK:
    """The top-k operations over the models and datasets the server shares."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def stream_dataset(
        self, question: TopKQuestion, dataset: str
    ) -> AsyncIterator[TopKEvent]:
        """Scan the server dataset `dataset`: progress, then the patches, then done."""
        prepared = await self._prepare(question)
        if not dataset:
            raise invalid_argument("DATASET_REQUIRED", "no dataset name given")
        opened = await asyncio.to_thread(self.state.datasets.open, dataset)
        async with stream_slots():  # a client-image stream is paced by its client: no slot
            async for event in run_in_thread(
                lambda emit: _scan_dataset(prepared, opened, emit), stopper=prepared.scan.stop
            ):
                yield event

    async def stream_images(
        self, question: TopKQuestion, images: AsyncIterator[ClientImage], keep_as_dataset: str
    ) -> AsyncIterator[TopKEvent]:
        """Scan the images the client streams as they arrive; with `keep_as_dataset` they are
        also written as a new server dataset of that name, in place before Done is sent."""
        prepared = await self._prepare(question)
        keep = None
        if keep_as_dataset:
            keep = await asyncio.to_thread(
                DatasetWriter, self.state.datasets.data_root, keep_as_dataset
            )
        received = ClientImages(images, asyncio.get_running_loop(), keep)

        def stop() -> None:
            prepared.scan.stop()
            received.stop()

        def body(emit: Callable[[TopKEvent], None]) -> None:
            held: list[TopKEvent] = []  # Done waits until the kept dataset is in place

            def gate(event: TopKEvent) -> None:
                (held.append if isinstance(event, Done) and keep is not None else emit)(event)

            _scan_client_images(prepared, received, gate)
            if keep is not None:
                keep.commit()
            for event in held:
                emit(event)

        try:
            async for event in run_in_thread(body, stopper=stop):
                yield event
        finally:
            if keep is not None:
                keep.abort()  # removes the hidden folder unless it was committed

    async def _prepare(self, question: TopKQuestion) -> _Prepared:
        """Validate a question (model, preprocessing, layer, channel, unit, k, cap, field) and
        build its scan and patch renderer."""
        model = await load_model(self.state, question.model)
        prep = model.resolve(question.preprocessing)
        layer = await find_layer(model, prep.reference_size, question.neuron.layer)
        query = _checked_query(question.neuron)
        check_channel(layer, query.channel)
        if query.unit is not None:
            check_unit(layer, query.unit)
        require_field(layer)
        renderer = PatchRenderer(model, layer.name, layer.field, prep, question.render)
        scan = await asyncio.to_thread(NeuronScan, model, layer, query, prep)
        return _Prepared(scan, renderer, model.preprocessing_warning(question.preprocessing))


def _checked_query(query: NeuronQuery) -> NeuronQuery:
    k = check_k(query.k or DEFAULT_K)
    if query.per_image_cap < 0:
        raise invalid_argument("INVALID_CAP", "per_image_cap must be >= 0")
    if query.channel < 0:
        raise invalid_argument("CHANNEL_OUT_OF_RANGE", f"channel {query.channel} is negative")
    return replace(query, k=k)


def _scan_dataset(prepared: _Prepared, dataset: Dataset, emit: Callable[[TopKEvent], None]) -> None:
    """The scan thread's body for a server dataset."""
    sources = dataset_sources(
        dataset.root, dataset.ids, range(len(dataset.ids)), dataset.input_cache
    )
    _scan_and_send(
        prepared,
        sources,
        emit,
        total=len(dataset.ids),
        source_of=lambda hit: dataset.source(hit.image_index, dataset.ids[hit.image_index]),
        hint="; was the dataset modified during the scan?",
    )


def _scan_client_images(
    prepared: _Prepared, images: ClientImages, emit: Callable[[TopKEvent], None]
) -> None:
    """The scan thread's body for client-streamed images: they are scanned as they arrive,
    and after each batch the bytes of images out of the ranking are released."""
    _scan_and_send(
        prepared,
        images,
        emit,
        total=lambda: images.received,
        source_of=lambda hit: images.source(hit.image_index, hit.image_id),
        reduced=lambda indices: images.reduced(indices, prepared.scan.kept_images),
    )


def _scan_and_send(
    prepared: _Prepared,
    sources: Iterable[ImageSource],
    emit: Callable[[TopKEvent], None],
    *,
    total: Total,
    source_of: Callable[[Hit], ImageSource],
    reduced: Callable[[list[int]], None] = lambda indices: None,
    hint: str = "",
) -> None:
    """Scan, then crop and send each patch, then done.

    `reduced(indices)` runs after each batch (or skipped image), when the ranking is
    consistent.
    """
    scan = prepared.scan
    count = total if callable(total) else lambda: total
    callbacks = ScanCallbacks(
        progress=throttled(lambda done, total, failed: emit(Progress(done, total, failed))),
        reduced=reduced,
        partial=lambda hits, done: emit(PartialRanking(list(hits), done)),
        skipped=lambda image_id, reason: emit(ImageSkipped(image_id, reason)),
    )
    if prepared.warning:  # before the work, so a long scan does not hide it until the end
        emit(Progress(0, count(), 0, prepared.warning))
    outcome = scan.run(sources, callbacks, total=total)
    emit(Progress(outcome.images_scanned, count(), outcome.images_failed))
    for hit in outcome.hits:
        if scan.stop_event.is_set():
            raise ScanCancelled()
        emit(PatchReady(hit, _patch(prepared.renderer, source_of(hit), hit, hint)))
    emit(
        Done(
            images_scanned=outcome.images_scanned,
            images_failed=outcome.images_failed,
            query=scan.query,
            preprocessing=scan.prep,
            preprocessing_warning=prepared.warning,
        )
    )


def _patch(renderer: PatchRenderer, source: ImageSource, hit: Hit, hint: str) -> PatchImage:
    try:
        return renderer(source, hit.box, hit.unit, hit.channel)
    except (OSError, ValueError, LookupError) as exc:  # e.g. the file vanished since its scan
        raise failed_precondition(
            "IMAGE_UNREADABLE",
            f"image {hit.image_id!r} (rank {hit.rank}) could not be read again to crop its "
            f"patch: {type(exc).__name__}{hint}",
            image=hit.image_id,
        ) from None
