"""TopKService: StreamTopK and StreamTopKImages as conversions around `core.topk`: the request
becomes a TopKQuestion, each domain event a `TopKEvent` wrapped in the RPC's response."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from maxact.client.kinds import TopKMode
from maxact.server.core.client_images import ClientImage
from maxact.server.core.topk import TopK, TopKQuestion
from maxact.server.core.validate import ServerState
from maxact.server.errors import invalid_argument
from maxact.server.scan.neuron import NeuronQuery
from maxact.server.service.convert import (
    preprocessing_from_proto,
    render_options_from_proto,
    topk_event_to_proto,
)
from maxact.server.service.errors import rpc
from maxact.v1 import topk_service_pb2 as pb
from maxact.v1 import topk_service_pb2_grpc


class TopKServicer(topk_service_pb2_grpc.TopKServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.topk = TopK(state)

    @rpc
    async def StreamTopK(
        self, request: pb.StreamTopKRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamTopKResponse]:
        events = self.topk.stream_dataset(_question(request.query), request.dataset)
        async for event in events:
            yield pb.StreamTopKResponse(event=topk_event_to_proto(event))

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
        question = _question(first.query)
        events = self.topk.stream_images(question, _images(requests), first.keep_as_dataset)
        async for event in events:
            yield pb.StreamTopKImagesResponse(event=topk_event_to_proto(event))


def _question(message: pb.TopKQuery) -> TopKQuestion:
    try:
        mode = TopKMode.from_proto(message.mode)
    except ValueError:
        raise invalid_argument("INVALID_MODE", f"unknown top-k mode {message.mode}") from None
    neuron = NeuronQuery(
        layer=message.layer,
        channel=message.channel,
        unit=(message.unit.y, message.unit.x) if message.HasField("unit") else None,
        k=message.k,
        mode=mode,
        bottom=message.bottom,
        per_image_cap=message.per_image_cap,
    )
    return TopKQuestion(
        model=message.model,
        neuron=neuron,
        preprocessing=preprocessing_from_proto(message.preprocessing),
        render=render_options_from_proto(message),
    )


async def _images(
    requests: AsyncIterator[pb.StreamTopKImagesRequest],
) -> AsyncIterator[ClientImage]:
    """The messages after the query, each of which must be an image."""
    number = 0
    async for message in requests:
        number += 1
        kind = message.WhichOneof("message")
        if kind != "image":
            raise invalid_argument(
                "IMAGE_EXPECTED",
                f"after the first message (the query) every message must be an image; "
                f"image message {number} is {'a ' + kind if kind else 'empty'}",
            )
        yield ClientImage(message.image.id, message.image.data, message.image.label)
