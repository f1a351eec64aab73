"""TopKService: scan a server-side dataset (StreamTopK) or images the client streams
(StreamTopKImages) for one neuron and stream progress, then patches.

The scan runs in its own thread through `streaming.run_in_thread`, which also stops it when
the client cancels. Both RPCs send the same `TopKEvent`, wrapped in their own response.

Client-streamed images are scanned as they arrive (see `client_images`); their progress
reports images_total = the images received so far, since the end is not known in advance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc

from maxact.client.defaults import DEFAULT_K
from maxact.client.kinds import TopKMode
from maxact.server.data.dataset_writer import DatasetWriter
from maxact.server.data.datasets import Dataset, dataset_sources
from maxact.server.data.preprocess import ResolvedPreprocessing
from maxact.server.data.reader import ImageSource
from maxact.server.errors import failed_precondition, invalid_argument
from maxact.server.models.registry import LayerEntry, LoadedModel
from maxact.server.patches.crop import PatchRenderer
from maxact.server.scan.engine import Total
from maxact.server.scan.neuron import Hit, NeuronQuery, NeuronScan, ScanCallbacks, ScanCancelled
from maxact.server.scan.reducers import check_k
from maxact.server.service.client_images import ClientImages
from maxact.server.service.convert import (
    hit_to_proto,
    patch_to_proto,
    preprocessing_from_proto,
    preprocessing_to_proto,
    render_options_from_proto,
)
from maxact.server.service.errors import rpc
from maxact.server.service.streaming import run_in_thread, throttled
from maxact.server.service.validate import (
    ServerState,
    check_channel,
    check_unit,
    find_layer,
    load_model,
    require_field,
)
from maxact.v1 import topk_service_pb2 as pb
from maxact.v1 import topk_service_pb2_grpc


class TopKServicer(topk_service_pb2_grpc.TopKServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def _checked_query(
        self, message: pb.TopKQuery
    ) -> tuple[LoadedModel, LayerEntry, NeuronQuery, ResolvedPreprocessing, PatchRenderer, str]:
        """Validate a query (model, preprocessing, layer, channel, unit, k, mode, field,
        patch rendering); the last item is the default-preprocessing warning ("" if none)."""
        model = await load_model(self.state, message.model)
        prep_request = preprocessing_from_proto(message.preprocessing)
        prep = model.resolve(prep_request)
        layer = await find_layer(model, prep.reference_size, message.layer)
        query = _neuron_query(message)
        check_channel(layer, query.channel)
        if query.unit is not None:
            check_unit(layer, query.unit)
        require_field(layer)
        renderer = PatchRenderer(
            model, layer.name, layer.field, prep, render_options_from_proto(message)
        )
        return model, layer, query, prep, renderer, model.preprocessing_warning(prep_request)

    @rpc
    async def StreamTopK(
        self, request: pb.StreamTopKRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamTopKResponse]:
        model, layer, query, prep, renderer, warning = await self._checked_query(request.query)
        if not request.dataset:
            raise invalid_argument("DATASET_REQUIRED", "no dataset name given")
        dataset = await asyncio.to_thread(self.state.datasets.open, request.dataset)
        scan = await asyncio.to_thread(NeuronScan, model, layer, query, prep)
        async for event in run_in_thread(
            lambda emit: _scan_dataset(scan, dataset, renderer, emit, warning), stopper=scan.stop
        ):
            yield event

    @rpc
    async def StreamTopKImages(
        self,
        request_iterator: AsyncIterator[pb.StreamTopKImagesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.StreamTopKImagesResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        kind = None if first is None else first.WhichOneof("message")
        if first is None or kind != "query":
            got = "no message" if first is None else f"a {kind or 'empty'} message"
            raise invalid_argument(
                "QUERY_REQUIRED", f"the first message of the stream must be a query, got {got}"
            )
        model, layer, query, prep, renderer, warning = await self._checked_query(first.query)
        scan = await asyncio.to_thread(NeuronScan, model, layer, query, prep)
        keep = None
        if first.keep_as_dataset:
            keep = await asyncio.to_thread(
                DatasetWriter, self.state.datasets.data_root, first.keep_as_dataset
            )
        images = ClientImages(requests, asyncio.get_running_loop(), keep)

        def stop() -> None:
            scan.stop()
            images.stop()

        def body(emit: Callable[[Any], None]) -> None:
            held: list[Any] = []  # Done waits until the kept dataset is in place

            def gate(item: Any) -> None:
                is_done = item.event.HasField("done")
                (held.append if is_done and keep is not None else emit)(item)

            _scan_client_images(scan, images, renderer, gate, warning)
            if keep is not None:
                keep.commit()
            for item in held:
                emit(item)

        try:
            async for event in run_in_thread(body, stopper=stop):
                yield event
        finally:
            if keep is not None:
                keep.abort()  # removes the hidden folder unless it was committed


def _neuron_query(message: pb.TopKQuery) -> NeuronQuery:
    k = check_k(message.k or DEFAULT_K)
    try:
        mode = TopKMode.from_proto(message.mode)
    except ValueError:
        raise invalid_argument("INVALID_MODE", f"unknown top-k mode {message.mode}") from None
    if message.per_image_cap < 0:
        raise invalid_argument("INVALID_CAP", "per_image_cap must be >= 0")
    if message.channel < 0:
        raise invalid_argument("CHANNEL_OUT_OF_RANGE", f"channel {message.channel} is negative")
    return NeuronQuery(
        layer=message.layer,
        channel=message.channel,
        unit=(message.unit.y, message.unit.x) if message.HasField("unit") else None,
        k=k,
        mode=mode,
        bottom=message.bottom,
        per_image_cap=message.per_image_cap,
    )


def _scan_dataset(
    scan: NeuronScan,
    dataset: Dataset,
    renderer: PatchRenderer,
    emit: Callable[[Any], None],
    warning: str,
) -> None:
    """The scan thread's body for a server dataset."""
    sources = dataset_sources(
        dataset.root, dataset.ids, range(len(dataset.ids)), dataset.input_cache
    )
    _scan_and_send(
        scan,
        sources,
        emit,
        renderer=renderer,
        response=pb.StreamTopKResponse,
        total=len(dataset.ids),
        source_of=lambda hit: dataset.source(hit.image_index, dataset.ids[hit.image_index]),
        hint="; was the dataset modified during the scan?",
        warning=warning,
    )


def _scan_client_images(
    scan: NeuronScan,
    images: ClientImages,
    renderer: PatchRenderer,
    emit: Callable[[Any], None],
    warning: str,
) -> None:
    """The scan thread's body for client-streamed images: they are scanned as they arrive,
    and after each batch the bytes of images out of the ranking are released."""

    _scan_and_send(
        scan,
        images,
        emit,
        renderer=renderer,
        response=pb.StreamTopKImagesResponse,
        total=lambda: images.received,
        source_of=lambda hit: images.source(hit.image_index, hit.image_id),
        reduced=lambda indices: images.reduced(indices, scan.kept_images),
        warning=warning,
    )


def _scan_and_send(
    scan: NeuronScan,
    sources: Iterable[ImageSource],
    emit: Callable[[Any], None],
    *,
    renderer: PatchRenderer,
    response: Callable[..., Any],
    total: Total,
    source_of: Callable[[Hit], ImageSource],
    reduced: Callable[[list[int]], None] = lambda indices: None,
    hint: str = "",
    warning: str = "",
) -> None:
    """Scan, then crop and send each patch, then done; `response` is the RPC's response type
    (it wraps the shared TopKEvent).

    `reduced(indices)` runs after each batch (or skipped image), when the ranking is
    consistent.
    """
    count = total if callable(total) else lambda: total

    def send(**event: Any) -> None:
        emit(response(event=pb.TopKEvent(**event)))

    callbacks = ScanCallbacks(
        progress=throttled(
            lambda done, total, failed: send(
                progress=pb.Progress(images_scanned=done, images_total=total, images_failed=failed)
            )
        ),
        reduced=reduced,
        partial=lambda hits, done: send(
            partial=pb.PartialTopK(hits=[hit_to_proto(hit) for hit in hits], images_scanned=done)
        ),
        skipped=lambda image_id, reason: send(
            skipped=pb.ImageSkipped(image=image_id, reason=reason)
        ),
    )
    if warning:  # before the work, so a long scan does not hide it until the end
        send(progress=pb.Progress(images_total=count(), preprocessing_warning=warning))
    outcome = scan.run(sources, callbacks, total=total)
    send(
        progress=pb.Progress(
            images_scanned=outcome.images_scanned,
            images_total=count(),
            images_failed=outcome.images_failed,
        )
    )
    for hit in outcome.hits:
        if scan.stop_event.is_set():
            raise ScanCancelled()
        send(patch=_patch(renderer, source_of(hit), hit, hint))
    send(
        done=pb.Done(
            images_scanned=outcome.images_scanned,
            images_failed=outcome.images_failed,
            k=scan.query.k,
            mode=TopKMode(scan.query.mode).to_proto(),
            preprocessing=preprocessing_to_proto(scan.prep),
            preprocessing_warning=warning,
        )
    )


def _patch(renderer: PatchRenderer, source: ImageSource, hit: Hit, hint: str = "") -> pb.Patch:
    try:
        patch = renderer(source, hit.box, hit.unit, hit.channel)
    except (OSError, ValueError, LookupError) as exc:  # e.g. the file vanished since its scan
        raise failed_precondition(
            "IMAGE_UNREADABLE",
            f"image {hit.image_id!r} (rank {hit.rank}) could not be read again to crop its "
            f"patch: {type(exc).__name__}{hint}",
            image=hit.image_id,
        ) from None
    return patch_to_proto(hit, patch)
