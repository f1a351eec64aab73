"""End to end on a real pretrained hybrid: PP-OCRv4's text recogniser (a CNN whose neck is a
pair of attention blocks over a 1 x W/8 token grid, from the rapidocr-onnxruntime wheel) over
text-line crops cut from scikit-image's `page` and `text` photos: `layers` lists its attention
blocks' token tensors, and a persisted scan's top-k equals plain onnxruntime + numpy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from maxact.client import Client
from maxact.client.demo.fetch import RECOGNISER, default_cache_dir, fetch_recogniser
from maxact.client.demo.text_crops import write_text_crops
from tests.onnx_models import layer_outputs

pytestmark = pytest.mark.slow  # a real 10 MB model

pytest.importorskip("skimage")

NAME = RECOGNISER.name
ATTENTION = "softmax_9.tmp_0"  # the first block's attention weights: tokens x heads x tokens
MLP = "swish_13.tmp_0"  # the first block's MLP hidden channels, after attention
CTC = "softmax_11.tmp_0"  # per token, the probability of each character


@pytest.fixture(scope="module")
def ocr_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    model = fetch_recogniser(default_cache_dir())
    data_root = tmp_path_factory.mktemp("ocr") / "data"
    paths = write_text_crops(data_root / "lines")
    return {"model": model, "data_root": data_root, "paths": paths}


@pytest.fixture(scope="module")
def ocr_client(ocr_world: dict[str, object]) -> Iterator[Client]:
    from maxact.server.app import start_server

    root = Path(str(ocr_world["model"])).parent
    with (
        start_server(root, ocr_world["data_root"], device="cpu") as running,
        Client(running.address, timeout=300) as client,
    ):
        yield client


def _rapidocr_input(path: Path) -> np.ndarray:
    """rapidocr's preprocessing written out: fit into 48 x 320 (bilinear), pad with mid-grey,
    BGR, (pixel / 255 - 0.5) / 0.5, CHW."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    if h * 320 >= w * 48:
        size = (min(320, max(1, round(w * 48 / h))), 48)
    else:
        size = (320, min(48, max(1, round(h * 320 / w))))
    resized = np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    canvas = np.full((48, 320, 3), 127.5, np.float32)
    canvas[: size[1], : size[0]] = resized
    bgr = canvas[:, :, ::-1]
    return ((bgr * np.float32(1 / 255) - 0.5) / 0.5).transpose(2, 0, 1)


def test_layers_list_the_attention_blocks_token_tensors(ocr_client: Client) -> None:
    info = ocr_client.get_model(NAME)
    assert (info.input_height, info.input_width) == (48, 320)
    layers = {layer.name: layer for layer in info.layers}
    tokens = [
        layer for layer in info.layers if layer.receptive_field and layer.receptive_field.tokens
    ]
    assert len(tokens) >= 60, [layer.name for layer in tokens]
    for name in (ATTENTION, MLP, CTC):
        rf = layers[name].receptive_field
        assert rf is not None and rf.tokens is not None, name
        assert (rf.tokens.height, rf.tokens.width, rf.tokens.prefix) == (1, 40, 0), name
        assert rf.global_context, name
    assert layers[MLP].shape == (240, 1, 40)
    assert not [layer.name for layer in info.layers if layer.field_error]


def test_scan_of_text_crops_answers_like_plain_onnxruntime(
    ocr_client: Client, ocr_world: dict[str, object]
) -> None:
    paths = [Path(p) for p in ocr_world["paths"]]  # type: ignore[union-attr]
    ids = [p.name for p in paths]
    scan = ocr_client.scans.create(NAME, [MLP, CTC], "lines", k=5)
    *_, final = ocr_client.scans.watch(scan.id)
    assert final.state == "succeeded", final
    inputs = np.stack([_rapidocr_input(p) for p in paths]).astype(np.float32)
    model = onnx.load(str(ocr_world["model"]))
    outputs = layer_outputs(model, [MLP, CTC], inputs)
    for layer, channel in ((MLP, 7), (CTC, 5)):
        maps = outputs[layer].reshape(len(ids), 40, -1)[:, :, channel]  # [N, tokens]
        scores = maps.max(axis=1)
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))[:5]
        _, patches, scanned = ocr_client.scans.neuron(scan.id, layer, channel, render="heatmap")
        assert scanned == len(ids)
        assert [p.hit.image for p in patches] == [ids[i] for i in order], layer
        assert [p.hit.unit for p in patches] == [(0, int(maps[i].argmax())) for i in order]
        assert [p.hit.score for p in patches] == pytest.approx(
            [float(scores[i]) for i in order], rel=1e-4, abs=1e-6
        )
