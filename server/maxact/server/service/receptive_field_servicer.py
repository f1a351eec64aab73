"""ReceptiveFieldService: a layer's field, and the exact box of one unit, as conversions
around `core.receptive_fields`."""

from __future__ import annotations

import grpc

from maxact.server.core.receptive_fields import receptive_field
from maxact.server.core.validate import ServerState
from maxact.server.service.convert import box_to_proto, field_to_proto
from maxact.server.service.errors import rpc
from maxact.v1 import receptive_field_service_pb2 as pb
from maxact.v1 import receptive_field_service_pb2_grpc


class ReceptiveFieldServicer(receptive_field_service_pb2_grpc.ReceptiveFieldServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    @rpc
    async def GetReceptiveField(
        self, request: pb.GetReceptiveFieldRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReceptiveFieldResponse:
        unit = (request.unit.y, request.unit.x) if request.HasField("unit") else None
        answer = await receptive_field(
            self.state, request.model, request.layer, list(request.size), unit
        )
        response = pb.GetReceptiveFieldResponse(
            model=answer.model,
            layer=answer.layer,
            input_name=answer.input_name,
            input_height=answer.input_size[0],
            input_width=answer.input_size[1],
            shape=list(answer.shape),
            receptive_field=field_to_proto(answer.field),
        )
        if answer.box is not None and answer.box_unclipped is not None:
            response.box.CopyFrom(box_to_proto(answer.box))
            response.box_unclipped.CopyFrom(box_to_proto(answer.box_unclipped))
        return response
