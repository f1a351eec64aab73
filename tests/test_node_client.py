"""The Node.js client example (client/examples/node/topk.js) against a real in-process server.

Its JSON document must equal `maxact topk --json` and its rank_N.png files must be byte-identical
to the Python client's. `npm ci` runs once per session in the example's folder (node_modules is
the cache); the tests skip only when node or npm is not on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from maxact.client.cli.main import main as maxact_main
from tests.onnx_models import bright_square_model, random_cnn, save

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "client" / "examples" / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = [
    pytest.mark.skipif(
        NODE is None or NPM is None,
        reason="the Node.js client test needs `node` and `npm` on PATH",
    ),
    pytest.mark.slow,  # npm install and node subprocesses
]


def _npm_up_to_date() -> bool:
    """node_modules was installed from the committed lockfile (npm's hidden lockfile is newer)."""
    hidden = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    return hidden.is_file() and hidden.stat().st_mtime >= lock.stat().st_mtime


@pytest.fixture(scope="session")
def node_client() -> Path:
    """The example's folder with its npm packages installed (once per session)."""
    if not _npm_up_to_date():
        command = [str(NPM), "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        done = subprocess.run(
            command, cwd=NODE_DIR, capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"`npm ci` failed in {NODE_DIR}:\n{done.stdout}\n{done.stderr}")
    return NODE_DIR / "topk.js"


def _run_node(script: Path, address: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAXACT_SERVER": address}
    env.pop("MAXACT_TOKEN", None)
    return subprocess.run(
        [str(NODE), str(script), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _squares(dataset: Path) -> None:
    """Bright squares of falling brightness at known places, plus an odd-sized photo."""
    dataset.mkdir()
    for i, (y, x) in enumerate([(10, 20), (30, 40), (0, 60), (50, 2)]):
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        pixels[y : y + 4, x : x + 4] = 250 - 40 * i
        Image.fromarray(pixels).save(dataset / f"img_{i}.png")
    wide = np.zeros((48, 96, 3), dtype=np.uint8)
    wide[20:26, 70:76] = 230
    (dataset / "sub").mkdir()
    Image.fromarray(wide).save(dataset / "sub" / "wide.png")


def _noise(dataset: Path) -> None:
    """Random photos of several sizes and formats, class-folder shaped."""
    rng = np.random.default_rng(7)
    for i, (h, w) in enumerate([(32, 32), (40, 56), (64, 48), (33, 71), (32, 32), (90, 60)]):
        folder = dataset / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        suffix = "jpg" if i == 3 else "png"
        Image.fromarray(pixels).save(folder / f"photo_{i}.{suffix}")


CASES: dict[str, tuple[Callable[[], onnx.ModelProto], Callable[[Path], None], str, int, int]] = {
    # case: (model, dataset maker, layer, channel, k)
    "bright-squares-conv1": (lambda: bright_square_model(64), _squares, "conv1", 0, 4),
    "random-cnn-relu_b": (lambda: random_cnn(seed=3, size=32), _noise, "relu_b", 2, 5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_node_topk_equals_python_cli_json_and_patch_bytes(
    case: str,
    node_client: Path,
    server: object,
    model_root: Path,
    data_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_model, make_dataset, layer, channel, k = CASES[case]
    save(make_model(), model_root, "zoo/net")
    make_dataset(data_root / "photos")
    address = server.address  # type: ignore[attr-defined]

    python_out = tmp_path / "python-out"
    argv = ["--server", address, "topk", "zoo/net", layer, "--channel", str(channel)]
    argv += ["-k", str(k), "--dataset", "photos", "--out", str(python_out), "--json"]
    assert maxact_main(argv) == 0
    expected = json.loads(capsys.readouterr().out)

    node_out = tmp_path / "node-out"
    done = _run_node(
        node_client, address, "zoo/net", layer, str(channel), "photos", str(node_out), str(k)
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # exactly one JSON document on stdout
    assert "receptive field" in done.stderr  # the RF call's summary went to stderr

    assert len(expected["results"]) == k
    scores = [r.pop("score") for r in document["results"]]
    expected_scores = [r.pop("score") for r in expected["results"]]
    assert scores == pytest.approx(expected_scores, rel=1e-12, abs=1e-12)
    assert document == expected  # model, layer, channel, k, mode, images_scanned, ranks, boxes

    names = [r["patch"] for r in document["results"]]
    assert names == [f"rank_{rank}.png" for rank in range(1, k + 1)]
    assert sorted(p.name for p in node_out.iterdir()) == sorted(names)
    for name in names:
        node_png = (node_out / name).read_bytes()
        assert node_png[:8] == b"\x89PNG\r\n\x1a\n"
        assert node_png == (python_out / name).read_bytes(), name


@pytest.mark.parametrize(
    ("model", "layer", "channel", "needles"),
    [
        ("zoo/missing", "conv1", 0, ["NOT_FOUND", "zoo/missing", "zoo/net"]),
        ("zoo/net", "no_such_tensor", 0, ["INVALID_ARGUMENT (LAYER_NOT_FOUND)", "no_such_tensor"]),
        ("zoo/net", "conv1", 7, ["INVALID_ARGUMENT (CHANNEL_OUT_OF_RANGE)", "channel 7"]),
    ],
    ids=["unknown-model", "unknown-layer", "channel-out-of-range-in-stream"],
)
def test_node_topk_errors_name_code_reason_and_exit_1(
    model: str,
    layer: str,
    channel: int,
    needles: list[str],
    node_client: Path,
    server: object,
    model_root: Path,
    data_root: Path,
    tmp_path: Path,
) -> None:
    save(bright_square_model(64), model_root, "zoo/net")
    _squares(data_root / "photos")
    out = tmp_path / "out"
    address = server.address  # type: ignore[attr-defined]
    done = _run_node(node_client, address, model, layer, str(channel), "photos", str(out))
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    for needle in needles:
        assert needle in done.stderr, done.stderr
    assert not out.exists()


def _unused_address() -> str:
    """A loopback address nothing listens on (a free port, bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_node_topk_unreachable_server_and_usage(node_client: Path, tmp_path: Path) -> None:
    address = _unused_address()
    done = _run_node(node_client, address, "m", "l", "0", "d", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr and address in done.stderr, done.stderr

    usage = _run_node(node_client, address, "m", "l", "not-a-number", "d", "out")
    assert usage.returncode == 2
    assert "CHANNEL" in usage.stderr and "usage:" in usage.stderr
