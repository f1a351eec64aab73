"""A running scan's neuron, classes and class pages over HTTP from the real server: the answers
of the images scanned so far (its last checkpoint), marked partial, refreshing themselves."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maxact.client import Client
from maxact.server.app import start_server
from tests.datasets import write_images
from tests.onnx_models import heavy_cnn, save

pytestmark = pytest.mark.slow  # real scans of a heavy model, caught while they run

CLASSES = ("cats", "dogs")
IMAGES = 400  # heavy at 128 px: the scan runs for a while after its first checkpoint
CHECKPOINT = 16
K = 3


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[httpx.Client, Client, str]]:
    """A server and a scan of a labelled dataset that has reached a checkpoint and is still
    running (cancelled at the end: nothing waits for it)."""
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    save(heavy_cnn(128), model_root, "heavy")
    write_images(data_root / "pets", IMAGES, 128, seed=4)
    labels = [f"img_{i:04d}.png,{CLASSES[i % 2]}" for i in range(IMAGES)]  # classes alternate
    (data_root / "pets" / "labels.csv").write_text("\n".join(labels) + "\n")
    with (
        start_server(
            model_root,
            data_root,
            device="cpu",
            store=tmp_path / "s.sqlite",
            checkpoint_images=CHECKPOINT,
        ) as server,
        Client(server.address, timeout=120) as client,
        httpx.Client(base_url=server.http_url, timeout=60) as web,
    ):
        scan = client.scans.create("heavy", ["relu5"], "pets", k=K)
        try:
            yield web, client, scan.id
        finally:
            client.scans.cancel(scan.id)


def _partial(web: httpx.Client, url: str) -> str:
    """The page once it shows a partial answer (after the scan's first checkpoint)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        page = web.get(url)
        assert page.status_code == 200, re.findall(r"class=\"error\">(.*)</p>", page.text)
        if 'class="card partial"' in page.text:
            return page.text
        time.sleep(0.2)
    raise AssertionError(f"{url} never showed a partial answer")


def _images_so_far(page: str) -> int:
    found = re.search(r"of the (\d+) images scanned up to the scan's last checkpoint", page)
    assert found is not None
    return int(found.group(1))


def _live(page: str, scan: str) -> None:
    """The page listens to the scan's events and asks for itself again as they come."""
    assert f'sse-connect="/api/v1/scans/{scan}/events"' in page
    assert "scan-progress from:body" in page and "scan-finished from:body" in page


def _running_page(running: tuple[httpx.Client, Client, str], path: str) -> str:
    """The running scan's page at `path` (after its scan's id) with its partial answer."""
    web, client, scan = running
    page = _partial(web, f"/scans/{scan}/{path}")
    assert client.scans.get(scan).state == "running"
    _live(page, scan)
    return page


def test_a_running_scans_classes_and_class_pages_show_the_answer_so_far(
    running: tuple[httpx.Client, Client, str],
) -> None:
    web, _, scan = running
    page = _running_page(running, "classes?layer=relu5")
    so_far = _images_so_far(page)
    assert CHECKPOINT <= so_far < IMAGES
    rows = re.findall(r'<tr>\s*<td><a href="[^"]*/classes/(\w+)\?layer=relu5">\w+</a></td>\s*'
                      r"<td>(\d+)</td>", page)  # fmt: skip
    assert sorted(name for name, _ in rows) == list(CLASSES)
    assert sum(int(n) for _, n in rows) == so_far  # every image scanned so far, by class
    one = _partial(web, f"/scans/{scan}/classes/cats?layer=relu5")
    assert "<img" not in one  # patches come when the scan has finished
    assert 'Class <span class="name">cats</span>' in one
    _live(one, scan)
    missing = web.get(f"/scans/{scan}/classes/birds?layer=relu5")
    assert missing.status_code == 400 and "CLASS_NOT_FOUND" in missing.text


def test_a_running_scans_neuron_page_shows_its_ranking_so_far(
    running: tuple[httpx.Client, Client, str],
) -> None:
    web, _, scan = running
    page = _running_page(running, "neurons?layer=relu5&channel=1")
    assert "<img" not in page and "/neurons/responses" not in page
    top = page[page.index("Top ") : page.index("Bottom ")]
    ranked = re.findall(r'<td class="score">([^<]*)</td><td class="image">([^<]*)</td>', top)
    assert len(ranked) == K
    scores = [float(score) for score, _ in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(html.unescape(image).startswith("img_") for _, image in ranked)
    beyond = web.get(f"/scans/{scan}/neurons?layer=relu5&channel=9999")
    assert beyond.status_code == 400 and "CHANNEL_OUT_OF_RANGE" in beyond.text
