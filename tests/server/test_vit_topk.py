"""Top-k over a tiny ViT's tokens equals brute force, through the real server and client.

A token tensor's channel is a spatial neuron over the patch grid: an image's score is the
channel's maximum over the grid tokens (the CLS prefix excluded), its unit the token's (row,
col) and its box the token's patch, for streams and persisted scans, before and after
attention. The brute force below is written out independently of the server's token view.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxact.client import Client, Preprocessing
from maxact.server.models.registry import ModelRegistry
from tests.cli_run import run, run_json
from tests.onnx_models import layer_outputs, save
from tests.scan.helpers import oracle_inputs, oracle_position_mode, write_random_images
from tests.vit_models import hybrid, tiny_vit

SIZE, PATCH, GRID, PREFIX = 32, 4, 8, 1
IMAGES = 60
LAYERS = ["embedded", "block0.ln1", "block0.mlp", "final_ln"]  # before / after attention
PREP = Preprocessing(size=(SIZE, SIZE))


@pytest.fixture(scope="module")
def vit_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("vit")
    model_root, data_root = root / "models", root / "data"
    model = tiny_vit(size=(SIZE, SIZE), patch=PATCH, heads=2, prefix=PREFIX, seed=4)
    save(model, model_root, "vit")
    ids = write_random_images(data_root / "photos", IMAGES, SIZE, seed=11)
    raw = layer_outputs(model, LAYERS, oracle_inputs(data_root / "photos", ids))
    # [N, 1 + H*W, C] -> [N, C, H, W] of the grid tokens, the CLS token dropped
    grids = {
        name: value[:, PREFIX:, :].reshape(IMAGES, GRID, GRID, -1).transpose(0, 3, 1, 2)
        for name, value in raw.items()
    }
    return {"model_root": model_root, "data_root": data_root, "ids": ids, "grids": grids}


@pytest.fixture(scope="module")
def vit_server(vit_world: dict[str, object]):  # type: ignore[no-untyped-def]
    from maxact.server.app import start_server

    with start_server(vit_world["model_root"], vit_world["data_root"], device="cpu") as running:
        yield running


@pytest.fixture(scope="module")
def vit_client(vit_server: object):  # type: ignore[no-untyped-def]
    with Client(vit_server.address, timeout=120) as client:  # type: ignore[attr-defined]
        yield client


def _expected(maps: np.ndarray, k: int, bottom: bool) -> list[tuple[int, float, tuple[int, int]]]:
    """(image, score, unit) of the k best (or weakest) per-image maxima; ties: earlier image."""
    flat = maps.reshape(len(maps), -1)
    best = flat.argmax(axis=1)
    scores = flat[np.arange(len(maps)), best]
    order = sorted(range(len(maps)), key=lambda i: (scores[i] if bottom else -scores[i], i))[:k]
    return [(i, float(scores[i]), divmod(int(best[i]), GRID)) for i in order]


def _patch_box(unit: tuple[int, int]) -> tuple[int, int, int, int]:
    y, x = unit
    return (y * PATCH, x * PATCH, (y + 1) * PATCH, (x + 1) * PATCH)


def test_layers_list_token_tensors_with_their_grid(vit_client: Client) -> None:
    layers = {layer.name: layer for layer in vit_client.get_model("vit").layers}
    for name in LAYERS:
        rf = layers[name].receptive_field
        assert rf is not None and rf.tokens is not None, name
        assert (rf.tokens.height, rf.tokens.width, rf.tokens.prefix) == (GRID, GRID, PREFIX)
        assert rf.global_context == (name in ("block0.mlp", "final_ln")), name
    assert layers["block0.mlp"].shape == (16, GRID, GRID)
    assert layers["logits"].receptive_field is not None
    assert not layers["logits"].receptive_field.spatial


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("bottom", [False, True])
def test_stream_topk_over_tokens_equals_brute_force(
    vit_client: Client, vit_world: dict, layer: str, bottom: bool
) -> None:
    channel = 3
    result = vit_client.topk(
        "vit", layer, channel, dataset="photos", k=7, bottom=bottom, preprocessing=PREP
    ).result()
    expected = _expected(vit_world["grids"][layer][:, channel], 7, bottom)
    ids = vit_world["ids"]
    assert result.images_scanned == IMAGES
    assert [h.image for h in result.hits] == [ids[e[0]] for e in expected]
    assert [h.unit for h in result.hits] == [e[2] for e in expected]
    assert [h.score for h in result.hits] == pytest.approx([e[1] for e in expected], rel=1e-5)
    assert [h.box for h in result.hits] == [_patch_box(e[2]) for e in expected]


def test_single_token_topk_equals_brute_force(vit_client: Client, vit_world: dict) -> None:
    values = vit_world["grids"]["block0.mlp"][:, 5, 2, 6]
    order = sorted(range(IMAGES), key=lambda i: (-values[i], i))[:5]
    result = vit_client.topk(
        "vit", "block0.mlp", 5, unit=(2, 6), dataset="photos", k=5, preprocessing=PREP
    ).result()
    assert [h.image for h in result.hits] == [vit_world["ids"][i] for i in order]
    assert [h.score for h in result.hits] == pytest.approx([float(values[i]) for i in order])
    assert all(h.box == _patch_box((2, 6)) for h in result.hits)


@pytest.mark.parametrize("layer", ["block0.ln1", "final_ln"])
def test_position_mode_over_tokens_equals_brute_force(
    vit_client: Client, vit_world: dict, layer: str
) -> None:
    field = (
        ModelRegistry(vit_world["model_root"], "cpu").get("vit").layer((SIZE, SIZE), layer).field
    )
    expected = oracle_position_mode(field, vit_world["grids"][layer], 1, 8, False, cap=3)
    result = vit_client.topk(
        "vit", layer, 1, dataset="photos", k=8, mode="position", per_image_cap=3, preprocessing=PREP
    ).result()
    assert [(h.image, h.unit) for h in result.hits] == [
        (vit_world["ids"][e[0]], e[1:3]) for e in expected
    ]
    assert [h.score for h in result.hits] == pytest.approx([e[3] for e in expected], rel=1e-5)


def test_persisted_scan_of_tokens_answers_neurons_like_brute_force(
    vit_client: Client, vit_world: dict
) -> None:
    scan = vit_client.scans.create(
        "vit", ["block0.ln1", "final_ln"], "photos", k=6, preprocessing=PREP
    )
    *_, final = vit_client.scans.watch(scan.id)
    assert final.state == "succeeded", final
    ids = vit_world["ids"]
    for layer in ("block0.ln1", "final_ln"):
        for channel, bottom in ((0, False), (6, True)):
            _, patches, scanned = vit_client.scans.neuron(
                scan.id, layer, channel, bottom=bottom, render="heatmap"
            )
            expected = _expected(vit_world["grids"][layer][:, channel], 6, bottom)
            assert scanned == IMAGES
            assert [p.hit.image for p in patches] == [ids[e[0]] for e in expected]
            assert [p.hit.unit for p in patches] == [e[2] for e in expected]
            assert [p.hit.score for p in patches] == pytest.approx([e[1] for e in expected])
            assert all(p.png.startswith(b"\x89PNG") for p in patches)
    stats = vit_client.scans.statistics(scan.id, "final_ln")
    maxima = vit_world["grids"]["final_ln"].reshape(IMAGES, 8, -1).max(axis=2)
    assert [c.max_max for c in stats.channels] == pytest.approx(maxima.max(axis=0).tolist())
    assert [c.firing_rate for c in stats.channels] == pytest.approx(
        (maxima > 0).mean(axis=0).tolist()
    )


def test_rf_of_a_token_gives_its_patch(vit_client: Client) -> None:
    info = vit_client.receptive_field("vit", "block0.mlp", unit=(3, 5))
    assert info.box == _patch_box((3, 5))
    assert info.receptive_field.tokens is not None
    assert info.receptive_field.global_context


def test_hybrid_cnn_tokens_cnn_scans_every_stage(
    client: Client, model_root: Path, data_root: Path
) -> None:
    model = hybrid(size=(SIZE, SIZE), seed=2)
    save(model, model_root, "hybrid")
    ids = write_random_images(data_root / "photos", 30, SIZE, seed=2)
    names = ["tokens", "block0.mlp", "grid_back", "cnn3"]
    raw = layer_outputs(model, names, oracle_inputs(data_root / "photos", ids))
    half = SIZE // 2
    grids = {
        "tokens": raw["tokens"].reshape(30, half, half, -1).transpose(0, 3, 1, 2),
        "block0.mlp": raw["block0.mlp"].reshape(30, half, half, -1).transpose(0, 3, 1, 2),
        "grid_back": raw["grid_back"],
        "cnn3": raw["cnn3"],
    }
    for name in names:
        result = client.topk("hybrid", name, 2, dataset="photos", k=4, preprocessing=PREP).result()
        flat = grids[name][:, 2].reshape(30, -1)
        order = sorted(range(30), key=lambda i: (-flat[i].max(), i))[:4]
        assert [h.image for h in result.hits] == [ids[i] for i in order], name
        assert [h.unit for h in result.hits] == [divmod(int(flat[i].argmax()), half) for i in order]


def test_cli_layers_and_rf_json_carry_the_token_grid(
    vit_server: object, capsys: pytest.CaptureFixture[str]
) -> None:
    server = vit_server.address  # type: ignore[attr-defined]
    document = run_json(capsys, "--server", server, "layers", "vit", "--json")
    layers = {layer["name"]: layer for layer in document["layers"]}
    assert layers["block0.mlp"]["tokens"] == {"grid": [GRID, GRID], "prefix": PREFIX}
    assert layers["block0.mlp"]["global_context"] is True
    assert "tokens" not in layers["patch_embed"]  # the Conv before the Reshape: spatial
    assert "tokens" not in layers["logits"]
    rf = run_json(
        capsys, "--server", server, "rf", "vit", "block0.ln1", "--unit", "7", "2", "--json"
    )
    assert rf["tokens"] == {"grid": [GRID, GRID], "prefix": PREFIX}
    assert rf["box"] == list(_patch_box((7, 2)))
    assert rf["rf"] == {"size": [PATCH, PATCH], "stride": [PATCH, PATCH], "padding": [0, 0]}


def test_cli_layers_text_names_the_token_grid(
    vit_server: object, capsys: pytest.CaptureFixture[str]
) -> None:
    server = vit_server.address  # type: ignore[attr-defined]
    code, out, err = run(capsys, "--server", server, "layers", "vit")
    assert code == 0, err
    line = next(row for row in out.splitlines() if row.startswith("block0.mlp "))
    assert f"grid {GRID}x{GRID} + {PREFIX} prefix" in line
    code, out, err = run(capsys, "--server", server, "rf", "vit", "embedded", "--unit", "1", "2")
    assert code == 0, err
    assert f"tokens  grid {GRID}x{GRID} + {PREFIX} prefix" in out


@pytest.mark.parametrize("render", ["heatmap", "mask"])
def test_token_patches_render_the_channel_over_the_grid(vit_client: Client, render: str) -> None:
    result = vit_client.topk(
        "vit", "block0.mlp", 2, dataset="photos", k=3, render=render, preprocessing=PREP
    ).result()
    assert len(result.patches) == 3
    for patch in result.patches:
        assert patch.png.startswith(b"\x89PNG")
        assert patch.hit.box == _patch_box(patch.hit.unit)


def test_html_report_of_a_token_scan_has_a_patch_per_hit(
    vit_client: Client, tmp_path: Path
) -> None:
    from maxact.client.report.writer import write_report

    scan = vit_client.scans.create("vit", ["final_ln"], "photos", k=2, preprocessing=PREP)
    *_, final = vit_client.scans.watch(scan.id)
    assert final.state == "succeeded", final
    index = write_report(vit_client, scan.id, tmp_path / "report", k=2)
    assert index.is_file()
    pngs = list((tmp_path / "report").rglob("*.png"))
    assert len(pngs) >= 8 * 2  # every channel's top-2 patches (and overviews)


def test_persisted_position_scan_of_tokens_equals_brute_force(
    vit_client: Client, vit_world: dict
) -> None:
    registry = ModelRegistry(vit_world["model_root"], "cpu").get("vit")
    scan = vit_client.scans.create(
        "vit", ["block0.ln1", "final_ln"], "photos", k=6, mode="position", preprocessing=PREP
    )
    *_, final = vit_client.scans.watch(scan.id)
    assert final.state == "succeeded", final
    for layer in ("block0.ln1", "final_ln"):
        field = registry.layer((SIZE, SIZE), layer).field
        expected = oracle_position_mode(field, vit_world["grids"][layer], 4, 6, False, cap=6)
        _, patches, _ = vit_client.scans.neuron(scan.id, layer, 4)
        assert [(p.hit.image, p.hit.unit) for p in patches] == [
            (vit_world["ids"][e[0]], e[1:3]) for e in expected
        ], layer
        assert [p.hit.score for p in patches] == pytest.approx([e[3] for e in expected], rel=1e-5)


def test_class_answers_of_a_token_layer_use_the_grid_maxima(
    vit_client: Client, vit_world: dict
) -> None:
    scan = vit_client.scans.create("vit", ["block0.mlp"], "photos", k=3, preprocessing=PREP)
    *_, final = vit_client.scans.watch(scan.id)
    assert final.state == "succeeded", final
    answer = vit_client.analysis.classes(scan.id, "block0.mlp", top=16)
    maxima = vit_world["grids"]["block0.mlp"].reshape(IMAGES, 16, -1).max(axis=2)  # prefix out
    classes = np.array([image.split("/")[0] for image in vit_world["ids"]])
    assert answer.images_scanned == IMAGES
    for entry in answer.classes:
        means = np.maximum(maxima[classes == entry.name], 0).mean(axis=0)
        assert entry.top_channels, entry.name
        for channel in entry.top_channels:
            assert channel.mean == pytest.approx(float(means[channel.channel]), rel=1e-5)


def test_http_layers_document_carries_the_token_grid_like_the_cli(
    vit_server: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    url = vit_server.http_url  # type: ignore[attr-defined]
    with httpx.Client(base_url=url, timeout=60) as api:
        document = api.get("/api/v1/models/vit").json()
    server = vit_server.address  # type: ignore[attr-defined]
    assert document == run_json(capsys, "--server", server, "layers", "vit", "--json")
    layers = {layer["name"]: layer for layer in document["layers"]}
    assert layers["final_ln"]["tokens"] == {"grid": [GRID, GRID], "prefix": PREFIX}
