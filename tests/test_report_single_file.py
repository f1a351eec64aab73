"""`maxact report ID --single-file FILE.html` against the real in-process server: ONE page
whose images are all data URIs, with no script and no link to another file (trackers show it
as it is), holding every channel of every layer with its patches and image names, and the
same patches as the folder report; a hostile image name is text."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maxact.client import Client
from maxact.server.app import start_server
from tests.cli_run import run
from tests.onnx_models import random_cnn, save

HOSTILE = "<img src=x onerror=alert(1)>"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_single_file_report_is_self_contained_and_holds_every_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models, data = tmp_path / "models", tmp_path / "data" / "pics"
    save(random_cnn(seed=3, size=32), models, "cnn")
    data.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(8):
        name = f"{HOSTILE}{i}.png" if i == 0 else f"img_{i}.png"
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / name.replace("/", "_"))
    with (
        start_server(models, data.parent, device="cpu", store=tmp_path / "s.sqlite") as server,
        Client(server.address, timeout=60) as client,
    ):
        info = client.scans.create("cnn", ["relu_a", "relu_b"], "pics", k=3)
        *_, last = client.scans.watch(info.id)
        assert last.state == "succeeded"
        page = tmp_path / "out" / "report.html"
        code, _, err = run(capsys, "--server", server.address, "report", info.id,
                           "--single-file", str(page))  # fmt: skip
        assert code == 0, err
        code, _, err = run(capsys, "--server", server.address, "report", info.id,
                           "--out", str(tmp_path / "folder"))  # fmt: skip
        assert code == 0, err
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # nothing beside it
    parsed = _Collector()
    parsed.feed(page.read_text(encoding="utf-8"))
    assert not [tag for tag, _ in parsed.tags if tag in ("script", "iframe", "object", "embed")]
    images = [attrs["src"] or "" for tag, attrs in parsed.tags if tag == "img"]
    assert images and all(src.startswith("data:image/") for src in images)
    for tag, attrs in parsed.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, name, value)
    sections = [a for t, a in parsed.tags if t == "section" and "neuron" in (a.get("class") or "")]
    assert len(sections) == 8 + 6  # random_cnn: relu_a has 8 channels, relu_b 6
    assert len(images) == 3 * (8 + 6)
    text = "".join(parsed.text)
    assert "relu_a" in text and "relu_b" in text
    assert HOSTILE + "0.png" in text  # shown as text: the parser saw no such <img> tag
    assert not [a for t, a in parsed.tags if t == "img" and a.get("onerror")]
    # the same patches as the folder report
    first = base64.b64decode(images[0].split(",", 1)[1])
    folder_patches = {p.read_bytes() for p in (tmp_path / "folder" / "layers").rglob("c*_r*.*")}
    assert first in folder_patches
