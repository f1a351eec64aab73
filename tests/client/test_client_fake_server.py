"""Client and CLI over a real gRPC channel to a scripted stand-in server (no model needed).

The stand-in checks what the client sends and answers fixed messages; the real server's
end-to-end tests live with the server.
"""

from __future__ import annotations

import io
import json
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from PIL import Image

from maxact.client import Client, MaxactError, Preprocessing, cli
from maxact.v1 import (
    common_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    receptive_field_service_pb2,
    receptive_field_service_pb2_grpc,
    topk_service_pb2,
    topk_service_pb2_grpc,
)

BIG_PATCH = 6 * 1024 * 1024  # over gRPC's 4 MiB default: the client must raise its limit


def _png(color: tuple[int, int, int], size: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, reason: str, msg: str) -> None:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="maxact"))
    status = status_pb2.Status(code=code.value[0], message=msg, details=[info])
    context.abort_with_status(rpc_status.to_status(status))


def _geometry(size: float, stride: float, padding: float) -> common_pb2.FieldGeometry:
    return common_pb2.FieldGeometry(size=[size] * 2, stride=[stride] * 2, padding=[padding] * 2)


class Models(model_service_pb2_grpc.ModelServiceServicer):
    def ListModels(self, request, context):
        return model_service_pb2.ListModelsResponse(
            models=[model_service_pb2.ModelSummary(name="zoo/net", size_bytes=2048, loaded=True)]
        )

    def GetModel(self, request, context):
        if request.name != "zoo/net":
            _abort(context, grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", f"no {request.name}")
        rf = common_pb2.ReceptiveField(spatial=True, geometry=_geometry(3, 2, 1))
        return model_service_pb2.GetModelResponse(
            name="zoo/net",
            inputs=[
                model_service_pb2.TensorInfo(name="x", element_type="float32", shape=[-1, 3, 8, 8])
            ],
            default_preprocessing=common_pb2.Preprocessing(scale=0.5),
            input_height=8,
            input_width=8,
            layers=[
                model_service_pb2.Layer(
                    name="conv", op="Conv", shape=[4, 4, 4], receptive_field=rf
                ),
                model_service_pb2.Layer(
                    name="up", op="Resize", shape=[4, 8, 8], field_error="Resize"
                ),
            ],
        )


class Fields(receptive_field_service_pb2_grpc.ReceptiveFieldServiceServicer):
    def GetReceptiveField(self, request, context):
        response = receptive_field_service_pb2.GetReceptiveFieldResponse(
            model=request.model,
            layer=request.layer,
            input_name="x",
            input_height=8,
            input_width=8,
            shape=[4, 4, 4],
            receptive_field=common_pb2.ReceptiveField(
                spatial=True,
                geometry=_geometry(3, 2, 0.5),
                rows=[common_pb2.Interval(start=0, stop=2)],
                cols=[common_pb2.Interval(start=0, stop=2)],
            ),
        )
        if request.HasField("unit"):
            response.box.CopyFrom(common_pb2.Box(y0=0, x0=1, y1=2, x1=4))
            response.box_unclipped.CopyFrom(common_pb2.Box(y0=-1, x0=1, y1=2, x1=4))
        return response


class TopK(topk_service_pb2_grpc.TopKServiceServicer):
    last_query: topk_service_pb2.StreamTopKRequest | None = None

    def StreamTopK(self, request, context):
        TopK.last_query = request
        if request.query.layer == "missing":
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "LAYER_NOT_FOUND", "no layer")
        r = topk_service_pb2.StreamTopKResponse
        yield r(progress=topk_service_pb2.Progress(images_done=2, images_total=2))
        big = request.query.layer == "big"
        for rank, color in ((1, (255, 0, 0)), (2, (0, 0, 255))):
            hit = topk_service_pb2.Hit(
                rank=rank,
                image=f"img{rank}.jpg",
                score=10.0 / rank,
                unit=common_pb2.Unit(y=rank, x=0),
                box=common_pb2.Box(y0=0, x0=0, y1=6, x1=6),
                channel=request.query.channel,
            )
            png = _png(color) + (b"\0" * BIG_PATCH if big else b"")
            yield r(patch=topk_service_pb2.Patch(hit=hit, png=png))
        yield r(done=topk_service_pb2.Done(images_scanned=2, k=request.query.k, mode=1))


@pytest.fixture(scope="module")
def server_address():
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Models(), server)
    receptive_field_service_pb2_grpc.add_ReceptiveFieldServiceServicer_to_server(Fields(), server)
    topk_service_pb2_grpc.add_TopKServiceServicer_to_server(TopK(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_client_reads_maxact_server_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MAXACT_SERVER", "example:1")
    assert Client().server == "example:1"
    monkeypatch.delenv("MAXACT_SERVER")
    assert Client().server == "127.0.0.1:50051"
    assert Client("other:2").server == "other:2"


def test_get_model_returns_typed_layers(server_address) -> None:
    with Client(server_address) as client:
        info = client.get_model("zoo/net")
    assert info.layer("conv").receptive_field.geometry.stride == (2.0, 2.0)
    assert info.layer("up").receptive_field is None and info.layer("up").field_error == "Resize"
    assert info.default_preprocessing == Preprocessing(scale=0.5)
    assert info.inputs[0].shape == (-1, 3, 8, 8)


def test_unary_error_carries_code_and_error_info_reason(server_address) -> None:
    with Client(server_address) as client, pytest.raises(MaxactError) as info:
        client.get_model("nope")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.reason == "MODEL_NOT_FOUND"
    assert str(info.value) == "NOT_FOUND (MODEL_NOT_FOUND): no nope"


def test_topk_sends_the_query_and_collects_patches(server_address) -> None:
    prep = Preprocessing(scale=1 / 255, channel_order="bgr")
    with Client(server_address) as client:
        result = client.topk(
            "zoo/net", "conv", 3, dataset="d", k=2, mode="position", bottom=True, unit=(1, 2),
            preprocessing=prep,
        ).result()  # fmt: skip
    sent = TopK.last_query
    assert sent.dataset == "d" and sent.query.channel == 3 and sent.query.k == 2
    assert sent.query.mode == topk_service_pb2.TOP_K_MODE_POSITION and sent.query.bottom
    assert (sent.query.unit.y, sent.query.unit.x) == (1, 2)
    assert Preprocessing.from_proto(sent.query.preprocessing) == prep
    assert [h.rank for h in result.hits] == [1, 2] and result.images_scanned == 2


def test_patches_larger_than_the_grpc_default_limit_arrive(server_address) -> None:
    with Client(server_address) as client:
        result = client.topk("zoo/net", "big", 0, dataset="d", k=2).result()
    assert len(result.patches[0].png) > BIG_PATCH


def test_unreachable_server_is_a_maxact_error_naming_it() -> None:
    with Client("127.0.0.1:1", timeout=5) as client, pytest.raises(MaxactError) as info:
        client.list_models()
    assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_cli_topk_out_writes_patches_montage_and_json(server_address, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["--server", server_address, "topk", "zoo/net", "conv", "--channel", "1", "-k", "2"]
    code = cli.main([*argv, "--dataset", "d", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    doc = json.loads(captured.out)  # exactly one JSON document on stdout
    assert [r["patch"] for r in doc["results"]] == ["rank_1.png", "rank_2.png"]
    assert doc["k"] == 2 and doc["channel"] == 1 and doc["mode"] == "image"
    assert (out / "rank_1.png").read_bytes() == _png((255, 0, 0))
    with Image.open(out / "montage.png") as montage:
        assert montage.width > 2 * 160
    assert "{" not in captured.err


def test_cli_layers_json_and_text(server_address, capsys) -> None:
    assert cli.main(["--server", server_address, "layers", "zoo/net", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["layers"][0]["rf"] == {"size": [3, 3], "stride": [2, 2], "padding": [1, 1]}
    assert doc["layers"][1]["rf"] is None
    assert cli.main(["--server", server_address, "layers", "zoo/net"]) == 0
    text = capsys.readouterr().out
    assert "conv" in text and "Resize" in text


def test_cli_rf_with_unit_prints_boxes(server_address, capsys) -> None:
    argv = ["--server", server_address, "rf", "zoo/net", "conv", "--unit", "0", "1", "--json"]
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rf"]["padding"] == [0.5, 0.5]
    assert doc["box"] == [0, 1, 2, 4] and doc["box_unclipped"] == [-1, 1, 2, 4]


def test_cli_models_text_lists_names(server_address, capsys) -> None:
    assert cli.main(["--server", server_address, "models"]) == 0
    assert "zoo/net" in capsys.readouterr().out


def test_cli_server_error_exits_1_with_message(server_address, capsys) -> None:
    argv = ["--server", server_address, "topk", "zoo/net", "missing", "--channel", "0"]
    assert cli.main([*argv, "--dataset", "d", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().endswith(
        "maxact: error: INVALID_ARGUMENT (LAYER_NOT_FOUND): no layer"
    )
