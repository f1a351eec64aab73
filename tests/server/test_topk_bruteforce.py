"""The scan's top-k equals a brute-force computation with plain onnxruntime and numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client, Preprocessing
from tests.onnx_models import layer_outputs, random_cnn, save

SIZE = 32
IMAGES = 120


def _write_random_images(dataset: Path, count: int, seed: int = 7) -> list[str]:
    """Smooth random photos of varied sizes (so resizing is exercised), some grayscale."""
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(count):
        h, w = int(rng.integers(24, 80)), int(rng.integers(24, 80))
        coarse = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        if i % 10 == 3:
            image = image.convert("L")
        image_id = f"class_{i % 3}/img_{i:04d}.png"
        (dataset / image_id).parent.mkdir(parents=True, exist_ok=True)
        image.save(dataset / image_id)
        ids.append(image_id)
    return sorted(ids)


def _brute_force_inputs(dataset: Path, ids: list[str]) -> np.ndarray:
    """The preprocessing contract, written out independently: bilinear resize, /255, NCHW."""
    arrays = []
    for image_id in ids:
        image = Image.open(dataset / image_id).convert("RGB")
        resized = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(arrays).astype(np.float32)


@pytest.fixture(scope="module")
def bruteforce_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("bruteforce")
    model_root, data_root = root / "models", root / "data"
    model = random_cnn(seed=3, size=SIZE)
    save(model, model_root, "random")
    ids = _write_random_images(data_root / "photos", IMAGES)
    inputs = _brute_force_inputs(data_root / "photos", ids)
    outputs = layer_outputs(model, ["conv_a", "relu_b", "logits"], inputs)
    return {"model_root": model_root, "data_root": data_root, "ids": ids, "outputs": outputs}


@pytest.fixture(scope="module")
def bf_client(bruteforce_world: dict[str, object]):  # type: ignore[no-untyped-def]
    from maxact.server.app import start_server

    with (
        start_server(
            bruteforce_world["model_root"], bruteforce_world["data_root"], device="cpu"
        ) as running,
        Client(running.address, timeout=120) as client,
    ):
        yield client


def _expected_channel_topk(
    values: np.ndarray, channel: int, k: int, ids: list[str], bottom: bool = False
) -> list[tuple[str, float, tuple[int, int]]]:
    maps = values[:, channel]
    flat = maps.reshape(len(ids), -1)
    best = flat.argmax(axis=1)  # an image's response is the channel's max, also for bottom-k
    scores = flat[np.arange(len(ids)), best]
    order = sorted(range(len(ids)), key=lambda i: ((scores[i] if bottom else -scores[i]), i))[:k]
    width = maps.shape[2]
    return [
        (ids[i], float(scores[i]), (int(best[i] // width), int(best[i] % width))) for i in order
    ]


@pytest.mark.parametrize(
    ("layer", "channel"), [("conv_a", 0), ("conv_a", 5), ("relu_b", 2), ("relu_b", 4)]
)
def test_channel_topk_equals_brute_force(
    bf_client: Client, bruteforce_world: dict, layer: str, channel: int
) -> None:
    k = 10
    result = bf_client.topk(
        "random",
        layer,
        channel,
        dataset="photos",
        k=k,
        preprocessing=Preprocessing(size=(SIZE, SIZE)),
    ).result()
    expected = _expected_channel_topk(
        bruteforce_world["outputs"][layer], channel, k, bruteforce_world["ids"]
    )
    assert result.images_scanned == IMAGES
    assert [h.image for h in result.hits] == [e[0] for e in expected]
    assert [h.unit for h in result.hits] == [e[2] for e in expected]
    assert [h.score for h in result.hits] == pytest.approx([e[1] for e in expected], rel=1e-5)


def test_bottom_k_equals_brute_force(bf_client: Client, bruteforce_world: dict) -> None:
    result = bf_client.topk(
        "random",
        "conv_a",
        1,
        dataset="photos",
        k=7,
        bottom=True,
        preprocessing=Preprocessing(size=(SIZE, SIZE)),
    ).result()
    expected = _expected_channel_topk(
        bruteforce_world["outputs"]["conv_a"], 1, 7, bruteforce_world["ids"], bottom=True
    )
    assert [h.image for h in result.hits] == [e[0] for e in expected]
    assert [h.score for h in result.hits] == pytest.approx([e[1] for e in expected], rel=1e-5)


def test_single_unit_topk_equals_brute_force(bf_client: Client, bruteforce_world: dict) -> None:
    values = bruteforce_world["outputs"]["relu_b"][:, 3, 2, 5]
    order = sorted(range(IMAGES), key=lambda i: (-values[i], i))[:5]
    result = bf_client.topk(
        "random",
        "relu_b",
        3,
        unit=(2, 5),
        dataset="photos",
        k=5,
        preprocessing=Preprocessing(size=(SIZE, SIZE)),
    ).result()
    assert [h.image for h in result.hits] == [bruteforce_world["ids"][i] for i in order]
    assert all(h.unit == (2, 5) for h in result.hits)
    assert [h.score for h in result.hits] == pytest.approx(
        [float(values[i]) for i in order], rel=1e-5
    )


def test_flat_logit_topk_equals_brute_force_with_whole_image_patches(
    bf_client: Client, bruteforce_world: dict
) -> None:
    logits = bruteforce_world["outputs"]["logits"][:, 2]
    order = sorted(range(IMAGES), key=lambda i: (-logits[i], i))[:6]
    result = bf_client.topk(
        "random", "logits", 2, dataset="photos", k=6, preprocessing=Preprocessing(size=(SIZE, SIZE))
    ).result()
    assert [h.image for h in result.hits] == [bruteforce_world["ids"][i] for i in order]
    assert [h.score for h in result.hits] == pytest.approx(
        [float(logits[i]) for i in order], rel=1e-5
    )
    for patch in result.patches:
        width, height = Image.open(bruteforce_world["data_root"] / "photos" / patch.hit.image).size
        assert patch.hit.box == (0, 0, height, width)
