"""`maxact classes`, `class` and `compare` through the real server, client and CLI, against an
independent oracle: plain onnxruntime + numpy per-image maxima of hand-set channels.

The dataset (200 generated images, five classes) and the model are built so the answer is
known: one detector channel per pattern (vertical stripes, horizontal stripes, red blobs), a
dead channel, an always-on channel, an uncovered class ("blank": nothing but the always-on
channel fires) and two near-identical classes ("vstripes", "vstripes2": the same pattern).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from maxact.client import Client, MaxactError
from maxact.client.cli.main import main
from maxact.common.preprocessing import Preprocessing
from tests.datasets import slow_scan
from tests.onnx_models import detector_weights, finish, layer_outputs, save

SIZE = 32
KERNEL = 8
PER_CLASS = 40
CLASSES = ("blank", "hstripes", "redblobs", "vstripes", "vstripes2")
CHANGED = (1, 2)  # channels whose filters differ in the "retrained" copy
K = 9


def detector_model(w: np.ndarray, b: np.ndarray, channels: int = 5) -> onnx.ModelProto:
    """conv (8x8) + ReLU -> "features" [N, C, 25, 25]; "logits" = its global max, flat."""
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w", "b"], ["conv"], kernel_shape=[KERNEL] * 2),
            helper.make_node("Relu", ["conv"], ["features"]),
            helper.make_node("GlobalMaxPool", ["features"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "detectors",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", channels])],
        initializer=[
            numpy_helper.from_array(w[:channels], "w"),
            numpy_helper.from_array(b[:channels], "b"),
        ],
    )
    return finish(graph)


def retrained_weights() -> tuple[np.ndarray, np.ndarray]:
    """The CHANGED channels swap detectors (1 finds red, 2 horizontal stripes); the rest stay."""
    w, b = detector_weights()
    w[[1, 2]], b[[1, 2]] = w[[2, 1]].copy(), b[[2, 1]].copy()
    return w, b


def write_dataset(root: Path, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(PER_CLASS):
        for name in CLASSES:
            level = int(rng.integers(150, 256))
            phase = int(rng.integers(0, 2))
            if name == "blank":
                pixels = np.full((SIZE, SIZE, 3), int(rng.integers(0, 256)))
            elif name == "hstripes":
                pixels = np.where((yy + phase) % 2 == 0, level, 0)[..., None].repeat(3, axis=2)
            elif name == "redblobs":
                pixels = np.zeros((SIZE, SIZE, 3), dtype=np.int64)
                for _ in range(int(rng.integers(1, 4))):
                    cy, cx, r = rng.integers(4, 21), rng.integers(4, 21), rng.integers(2, 6)
                    pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (level, 0, 0)
            else:
                pixels = np.where((xx + phase) % 2 == 0, level, 0)[..., None].repeat(3, axis=2)
            path = root / name / f"{name}_{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(path)


# ---------------------------------------------------------------- the independent oracle


def per_image_maxima(model: onnx.ModelProto, data: Path) -> tuple[list[str], np.ndarray]:
    """(image ids in dataset order, [N, C] maxima of "features") by plain onnxruntime."""
    ids = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    inputs = np.stack(
        [
            np.asarray(Image.open(data / i).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
            * np.float32(1 / 255)
            for i in ids
        ]
    )
    features = layer_outputs(model, ["features"], inputs)["features"]
    return ids, features.max(axis=(2, 3))


def oracle_classes(ids: list[str], maxima: np.ndarray, selective: float, top: int) -> dict:
    labels = [i.split("/")[0] for i in ids]
    names = sorted(set(labels))
    clipped = np.maximum(maxima.astype(np.float64), 0)
    m = np.array([clipped[[lab == n for lab in labels]].mean(axis=0) for n in names])
    count, channels = m.shape
    si, preferred, contrast = np.zeros(channels), np.zeros(channels, int), np.zeros_like(m)
    for c in range(channels):
        best = int(np.argmax(m[:, c]))
        rest = (m[:, c].sum() - m[best, c]) / (count - 1)
        si[c] = 0.0 if m[best, c] + rest == 0 else (m[best, c] - rest) / (m[best, c] + rest)
        preferred[c] = best
        for j in range(count):
            contrast[j, c] = m[j, c] - (m[:, c].sum() - m[j, c]) / (count - 1)
    rate = (maxima > 0).mean(axis=0)
    classes = []
    for j, name in enumerate(names):
        ranked = sorted(range(channels), key=lambda c: (-contrast[j, c], c))
        classes.append(
            {
                "name": name,
                "images": labels.count(name),
                "selective_channels": [
                    c for c in range(channels) if preferred[c] == j and si[c] >= selective
                ],
                "top_channels": [
                    {
                        "channel": c,
                        "mean": m[j, c],
                        "contrast": contrast[j, c],
                        "selectivity": si[c],
                    }
                    for c in ranked
                    if contrast[j, c] > 0
                ][:top],
            }
        )
    centred = m - m.mean(axis=0)
    pairs = []
    for a in range(count):
        for b in range(a + 1, count):
            norm = np.linalg.norm(centred[a]) * np.linalg.norm(centred[b])
            pairs.append(((centred[a] @ centred[b]) / norm if norm else 0.0, names[a], names[b]))
    pairs.sort(key=lambda p: -p[0])
    return {
        "images_scanned": len(ids),
        "channels": channels,
        "dead": [c for c in range(channels) if rate[c] == 0],
        "non_selective": [c for c in range(channels) if rate[c] >= 0.9 and si[c] < 0.1],
        "classes": classes,
        "uncovered": [c["name"] for c in classes if not c["selective_channels"]],
        "confusable": [{"classes": [a, b], "similarity": s} for s, a, b in pairs[:10]],
    }


def assert_same(actual: object, expected: object, where: str = "") -> None:
    """Equal structure; integers and strings exactly, floats to float32 precision."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) >= set(expected), where
        for key, value in expected.items():
            assert_same(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (where, actual)
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float | np.floating):
        assert actual == pytest.approx(float(expected), rel=1e-5, abs=1e-6), where
    else:
        assert actual == expected, where


# ---------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One server; models `detectors`, `retrained`, `narrow` (4 channels); dataset `shapes`
    (labelled) and `unlabelled`; finished scans of them."""
    from maxact.server.app import start_server

    root = tmp_path_factory.mktemp("classes")
    models, data = root / "models", root / "data"
    w, b = detector_weights()
    original = detector_model(w, b)
    save(original, models, "detectors")
    save(detector_model(*retrained_weights()), models, "retrained")
    save(detector_model(w, b, channels=4), models, "narrow")
    (models / "detectors.labels.txt").write_text("vertical\nhorizontal\nred\nnothing\nalways\n")
    write_dataset(data / "shapes")
    (data / "unlabelled").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (SIZE, SIZE), (60 * i, 0, 0)).save(data / "unlabelled" / f"{i}.png")
    slow_scan(models, data, 24)
    server = start_server(models, data, port=0, device="cpu")
    prep = Preprocessing(size=(SIZE, SIZE), scale=1 / 255)
    try:
        with Client(server.address, timeout=120) as client:
            scans = {}
            for model, dataset in (
                ("detectors", "shapes"),
                ("retrained", "shapes"),
                ("narrow", "shapes"),
                ("detectors", "unlabelled"),
            ):
                info = client.scans.create(model, ["features"], dataset, k=K, preprocessing=prep)
                *_, last = client.scans.watch(info.id)
                assert last.state == "succeeded", last
                scans[f"{model}/{dataset}"] = info.id
        yield {
            "address": server.address,
            "http": server.http_url,
            "scans": scans,
            "data": data / "shapes",
            "original": original,
        }
    finally:
        server.stop()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code, out, err = _cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def oracle(world: dict) -> tuple[list[str], np.ndarray]:
    return per_image_maxima(world["original"], world["data"])


# ---------------------------------------------------------------- classes


def test_classes_json_equals_the_bruteforce_oracle_in_every_field(world, oracle, capsys) -> None:  # type: ignore[no-untyped-def]
    scan = world["scans"]["detectors/shapes"]
    doc = _json(capsys, "--server", world["address"], "classes", scan, "features")
    expected = oracle_classes(*oracle, selective=0.5, top=10)
    assert_same(doc, {"scan": scan, "layer": "features", **expected})
    strict = _json(
        capsys, "--server", world["address"], "classes", scan, "features", "--selective", "0.9"
    )
    assert_same(strict, oracle_classes(*oracle, selective=0.9, top=10))


def test_classes_names_detectors_dead_always_on_uncovered_and_the_twin_classes(
    world, capsys
) -> None:  # type: ignore[no-untyped-def]
    scan = world["scans"]["detectors/shapes"]
    doc = _json(capsys, "--server", world["address"], "classes", scan, "features")
    selective = {c["name"]: c["selective_channels"] for c in doc["classes"]}
    assert selective["hstripes"] == [1] and selective["redblobs"] == [2]
    assert [0] in (selective["vstripes"], selective["vstripes2"])  # one twin takes channel 0
    assert doc["dead"] == [3] and doc["non_selective"] == [4]
    assert "blank" in doc["uncovered"] and "hstripes" not in doc["uncovered"]
    assert doc["confusable"][0]["classes"] == ["vstripes", "vstripes2"]
    assert doc["confusable"][0]["similarity"] > 0.99
    for entry in doc["classes"]:  # the always-on and the dead channel top no class
        assert not {3, 4} & {c["channel"] for c in entry["top_channels"]}


def test_classes_text_reads_like_an_answer(world, capsys) -> None:  # type: ignore[no-untyped-def]
    scan = world["scans"]["detectors/shapes"]
    code, out, _ = _cli(capsys, "--server", world["address"], "classes", scan, "features")
    assert code == 0
    assert "class 'hstripes' (40 images): 1 selective channel (1), best 1 (selectivity 1.00)" in out
    assert "no channel is selective for 'blank'" in out
    assert "1 of 5 channels fire for everything" in out
    assert "1 of 5 channels are dead (never fire): 3" in out
    assert "'vstripes' ~ 'vstripes2'" in out


def test_class_lists_the_top_channels_with_their_patches_and_writes_montages(
    world, oracle, capsys, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    scan = world["scans"]["detectors/shapes"]
    out = tmp_path / "red"
    doc = _json(
        capsys, "--server", world["address"], "class", scan, "features", "redblobs",
        "-k", "4", "--top", "2", "--out", str(out),
    )  # fmt: skip
    expected = oracle_classes(*oracle, selective=0.5, top=2)
    (red,) = [c for c in expected["classes"] if c["name"] == "redblobs"]
    assert [c["channel"] for c in doc["top_channels"]] == [
        c["channel"] for c in red["top_channels"]
    ]
    ids, maxima = oracle
    best = doc["top_channels"][0]
    assert best["channel"] == 2
    order = sorted(range(len(ids)), key=lambda i: (-maxima[i, 2], i))[:4]
    assert [r["image"] for r in best["results"]] == [ids[i] for i in order]
    assert [r["score"] for r in best["results"]] == pytest.approx(maxima[order, 2], rel=1e-5)
    for rank in range(1, 5):
        assert (out / "c2" / f"rank_{rank}.png").is_file()
    assert (out / "c2" / "montage.png").is_file() and (out / "montage.png").is_file()
    assert best["results"][0]["patch"] == "c2/rank_1.png"


# ---------------------------------------------------------------- compare


def test_compare_names_exactly_the_changed_channels(world, capsys) -> None:  # type: ignore[no-untyped-def]
    scans = world["scans"]
    doc = _json(
        capsys, "--server", world["address"], "compare",
        scans["detectors/shapes"], scans["retrained/shapes"], "features",
    )  # fmt: skip
    changed = [c["channel"] for c in doc["channels"] if c["overlap"] < 1]
    assert sorted(changed) == list(CHANGED)
    assert [c["channel"] for c in doc["channels"][: len(CHANGED)]] == sorted(CHANGED)
    assert all(c["overlap"] == 1 for c in doc["channels"][len(CHANGED) :])
    by_channel = {c["channel"]: c for c in doc["channels"]}
    assert by_channel[4]["firing_rate"] == [1.0, 1.0] and by_channel[4]["mean"] == [1.0, 1.0]
    assert by_channel[1]["firing_rate"][0] == pytest.approx(0.2)  # horizontal stripes: 1/5


def test_compare_and_classes_refuse_what_they_cannot_answer(world) -> None:  # type: ignore[no-untyped-def]
    scans = world["scans"]
    with Client(world["address"], timeout=60) as client:
        cases = [
            (
                lambda: client.analysis.classes(scans["detectors/unlabelled"], "features"),
                "FAILED_PRECONDITION",
                "SCAN_NOT_LABELLED",
            ),
            (
                lambda: client.analysis.compare(
                    scans["detectors/shapes"], scans["detectors/unlabelled"], "features"
                ),
                "FAILED_PRECONDITION",
                "DATASET_MISMATCH",
            ),
            (
                lambda: client.analysis.compare(
                    scans["detectors/shapes"], scans["narrow/shapes"], "features"
                ),
                "INVALID_ARGUMENT",
                "LAYER_SHAPE_MISMATCH",
            ),
            (
                lambda: client.analysis.classes(scans["detectors/shapes"], "conv"),
                "INVALID_ARGUMENT",
                "LAYER_NOT_FOUND",
            ),
            (
                lambda: client.analysis.class_channels(
                    scans["detectors/shapes"], "features", "zebra"
                ),
                "INVALID_ARGUMENT",
                "CLASS_NOT_FOUND",
            ),
        ]
        for call, code, reason in cases:
            with pytest.raises(MaxactError) as caught:
                call()
            assert (caught.value.code.name, caught.value.reason) == (code, reason)
        running = client.scans.create("heavy", ["relu5"], "many", k=2)
        try:
            with pytest.raises(MaxactError) as caught:
                client.analysis.compare(running.id, running.id, "relu5")
            assert caught.value.reason == "SCAN_NOT_FINISHED"
        finally:
            client.scans.cancel(running.id)


# ---------------------------------------------------------------- class names of outputs


def test_a_labels_sidecar_names_the_logits_channels_in_topk_neuron_and_layers(
    world, capsys
) -> None:  # type: ignore[no-untyped-def]
    address = world["address"]
    with Client(address) as client:
        names = client.analysis.class_names("detectors")
        assert names.layer == "logits" and names.label("logits", 2) == "red"
        assert client.analysis.class_names("retrained").names == ()
    topk = _json(
        capsys, "--server", address, "topk", "detectors", "logits", "--channel", "2",
        "--dataset", "shapes", "-k", "3", "--size", "32", "32", "--scale", str(1 / 255),
    )  # fmt: skip
    assert topk["label"] == "red"
    assert all(r["image"].startswith("redblobs/") for r in topk["results"])
    code, out, _ = _cli(
        capsys, "--server", address, "topk", "detectors", "logits", "--channel", "2",
        "--dataset", "shapes", "-k", "3", "--size", "32", "32", "--scale", str(1 / 255),
    )  # fmt: skip
    assert code == 0 and "red" in out
    conv = _json(
        capsys, "--server", address, "topk", "detectors", "features", "--channel", "2",
        "--dataset", "shapes", "-k", "1", "--size", "32", "32", "--scale", str(1 / 255),
    )  # fmt: skip
    assert "label" not in conv  # only the flat output's channels are named
    layers = _json(capsys, "--server", address, "layers", "detectors")
    assert all("labels" not in layer for layer in layers["layers"] if layer["name"] != "logits")
    (logits,) = [layer for layer in layers["layers"] if layer["name"] == "logits"]
    assert logits["labels"] == ["vertical", "horizontal", "red", "nothing", "always"]


# ---------------------------------------------------------------- the gallery


def test_report_classes_page_flags_uncovered_classes_and_names_logits(
    world, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    from html.parser import HTMLParser

    from maxact.client.report.writer import write_report

    address = world["address"]
    with Client(address, timeout=120) as client:
        scan = client.scans.create(
            "detectors",
            ["features", "logits"],
            "shapes",
            k=3,
            preprocessing=Preprocessing(size=(SIZE, SIZE), scale=1 / 255),
        )
        *_, last = client.scans.watch(scan.id)
        assert last.state == "succeeded"
        index = write_report(client, scan.id, tmp_path / "gallery", k=3)
    code, out, err = _cli(capsys, "--server", address, "neuron", scan.id, "logits", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["label"] == "red"
    folders = json.loads((index.parent / "report.json").read_text())
    text = json.dumps(folders)
    assert "features" in text
    features = next(p for p in (index.parent / "layers").iterdir() if p.name == "features")
    page = (features / "classes.html").read_text()
    assert "classes.html" in (features / "index.html").read_text()

    class Rows(HTMLParser):
        """Collects each table row's css class and text."""

        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[str, str]] = []
            self.images: list[str] = []

        def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
            attributes = dict(attrs)
            if tag == "tr":
                self.rows.append((attributes.get("class") or "", ""))
            if tag == "img":
                self.images.append(attributes["src"])

        def handle_data(self, data):  # type: ignore[no-untyped-def]
            if self.rows:
                css, text = self.rows[-1]
                self.rows[-1] = (css, text + data)

    parser = Rows()
    parser.feed(page)
    by_class = {text.split()[0]: css for css, text in parser.rows[1:]}
    assert set(by_class) == set(CLASSES)
    assert by_class["blank"] == "uncovered" and by_class["hstripes"] == ""
    assert parser.images and all((features / src).is_file() for src in parser.images)
    assert "classes/c2_r1.png" in parser.images  # red blobs' best channel shows its patch
    logits = next(p for p in (index.parent / "layers").iterdir() if p.name == "logits")
    # the layer page's rows (drawn by its script from the page's JSON) name the class
    data = re.search(r'id="neuron-data">(.*?)</script>', (logits / "index.html").read_text(), re.S)
    assert data is not None
    assert {row["channel"]: row["label"] for row in json.loads(data.group(1))}[2] == "red"


def test_metadata_key_names_the_outputs_and_a_bad_value_is_refused(tmp_path) -> None:
    from maxact.server.app import start_server

    w, b = detector_weights()
    named, broken = detector_model(w, b), detector_model(w, b)
    helper.set_model_props(named, {"maxact.labels": json.dumps(list("abcde"))})
    helper.set_model_props(broken, {"maxact.labels": '{"not": "a list"}'})
    save(named, tmp_path, "named")
    save(broken, tmp_path, "broken")
    server = start_server(tmp_path, None, port=0, device="cpu")
    try:
        with Client(server.address, timeout=30) as client:
            assert client.analysis.class_names("named").names == tuple("abcde")
            with pytest.raises(MaxactError) as caught:
                client.analysis.class_names("broken")
            assert caught.value.reason == "MODEL_LABELS_INVALID"
    finally:
        server.stop()
