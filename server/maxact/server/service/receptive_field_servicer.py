"""ReceptiveFieldService: a layer's field, and the exact box of one unit."""

from __future__ import annotations

from typing import Any

import grpc

from maxact.server.errors import invalid_argument
from maxact.server.service.convert import box_to_proto, field_to_proto
from maxact.server.service.errors import rpc
from maxact.server.service.validate import (
    ServerState,
    check_unit,
    find_layer,
    load_model,
    require_field,
    size_from,
)
from maxact.v1 import receptive_field_service_pb2 as pb
from maxact.v1 import receptive_field_service_pb2_grpc


class ReceptiveFieldServicer(receptive_field_service_pb2_grpc.ReceptiveFieldServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    @rpc
    async def GetReceptiveField(
        self, request: pb.GetReceptiveFieldRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetReceptiveFieldResponse:
        model = await load_model(self.state, request.model)
        size = model.input_size(size_from(list(request.size)))
        layer = await find_layer(model, size, request.layer)
        require_field(layer)
        assert layer.field is not None
        response = pb.GetReceptiveFieldResponse(
            model=model.name,
            layer=layer.name,
            input_name=model.input.name,
            input_height=size[0],
            input_width=size[1],
            shape=list(layer.shape),
            receptive_field=field_to_proto(layer.field),
        )
        if request.HasField("unit"):
            unit = (request.unit.y, request.unit.x)
            if not layer.field.spatial:
                raise invalid_argument(
                    "UNIT_NOT_SPATIAL", f"layer {layer.name!r} is flat: it has no (y, x) units"
                )
            check_unit(layer, unit)
            response.box.CopyFrom(box_to_proto(layer.field.box(*unit)))
            y0, x0, y1, x1 = layer.field.box_unclipped(*unit)
            response.box_unclipped.CopyFrom(
                box_to_proto((int(y0 // 1), int(x0 // 1), -int(-y1 // 1), -int(-x1 // 1)))
            )
        return response
