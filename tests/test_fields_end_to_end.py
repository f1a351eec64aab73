"""Receptive fields through the real server: channel groups, global context, and an op the
engine cannot trace failing only the layers that depend on it, with the op named."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from maxact.client import Client, MaxactError
from maxact.client.cli.main import main
from tests.datasets import write_images
from tests.onnx_models import save
from tests.rf.builders import Net


def _inception_se_gather_model() -> tuple[object, dict[str, str]]:
    """conv -> Inception-like concat (1x1 | 3x3 | double 3x3) -> SE gate; and a Gather over
    rows (an op the field engine does not trace) on a side branch."""
    net = Net((24, 24))
    x = net.relu(net.conv("x", 4, 3, stride=2, pad=1))
    b1 = net.conv(x, 2, 1, pad=0)
    b2 = net.conv(net.conv(x, 2, 1, pad=0), 3, 3)
    b3 = net.conv(net.conv(net.conv(x, 2, 1, pad=0), 2, 3), 2, 3)
    cat = net.op("Concat", [b1, b2, b3], 7, axis=1)
    gate = net.op("Sigmoid", [net.op("GlobalAveragePool", [cat], 7)], 7)
    se = net.op("Mul", [cat, gate], 7)
    rows = net.ints([0, 2, 4, 6])
    gathered = net.op("Gather", [x, rows], 4, axis=2)
    after_gather = net.conv(gathered, 2, 1, pad=0)
    model = net.model([se, after_gather])
    return model, {"first": x, "cat": cat, "se": se, "gather": gathered, "after": after_gather}


@pytest.fixture
def fields_world(server: object, model_root: Path, data_root: Path) -> dict[str, str]:
    model, names = _inception_se_gather_model()
    save(model, model_root, "inception")
    write_images(data_root / "noise", 4, 24, seed=0)
    return {**names, "address": server.address}  # type: ignore[attr-defined]


def test_concat_of_branches_reports_channel_groups_over_rpc_and_cli(
    fields_world: dict[str, str], client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    info = client.receptive_field("inception", fields_world["cat"])
    groups = [
        (g.first_channel, g.last_channel, g.geometry.size[0])
        for g in info.receptive_field.channel_groups
    ]
    assert groups == [(0, 1, 3), (2, 4, 7), (5, 6, 11)]
    assert info.receptive_field.geometry.size[0] == 11
    assert main(["--server", fields_world["address"], "layers", "inception", "--json"]) == 0
    layers = {layer["name"]: layer for layer in json.loads(capsys.readouterr().out)["layers"]}
    cat = layers[fields_world["cat"]]
    assert [g["channels"] for g in cat["channel_groups"]] == [[0, 1], [2, 4], [5, 6]]
    assert [g["size"] for g in cat["channel_groups"]] == [[3, 3], [7, 7], [11, 11]]


def test_squeeze_excitation_gate_keeps_local_field_with_global_context(
    fields_world: dict[str, str], client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    se = client.receptive_field("inception", fields_world["se"], unit=(5, 5))
    cat = client.receptive_field("inception", fields_world["cat"], unit=(5, 5))
    assert se.receptive_field.global_context is True
    assert cat.receptive_field.global_context is False
    assert se.box == cat.box
    argv = ["--server", fields_world["address"], "rf", "inception", fields_world["se"], "--json"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["global_context"] is True
    assert len(document["channel_groups"]) == 3


def test_untraceable_op_fails_dependent_layers_only_naming_the_op(
    fields_world: dict[str, str], client: Client
) -> None:
    layers = {layer.name: layer for layer in client.get_model("inception").layers}
    assert "Gather" in layers[fields_world["after"]].field_error
    assert layers[fields_world["after"]].receptive_field is None
    assert layers[fields_world["first"]].receptive_field is not None
    with pytest.raises(MaxactError) as caught:
        client.topk("inception", fields_world["after"], 0, dataset="noise").result()
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "RECEPTIVE_FIELD_UNAVAILABLE"
    assert "Gather" in caught.value.message
    with pytest.raises(MaxactError) as caught:
        client.receptive_field("inception", fields_world["gather"])
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    # the rest of the model stays usable
    result = client.topk("inception", fields_world["se"], 1, dataset="noise", k=2).result()
    assert len(result.hits) == 2
