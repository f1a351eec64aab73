"""The web UI's pages over HTTP from the real server: each permanent URL answers HTML built
from the core's answers (compared with what the gRPC client gets for the same question),
user data is escaped everywhere, bad input gets an HTML error page with the right status."""

from __future__ import annotations

import html
import re
from urllib.parse import quote

import httpx
import numpy as np
from PIL import Image

from maxact.client.cli.main import main
from tests.onnx_models import layer_outputs
from tests.webui.conftest import DEAD, HOSTILE, LAYERS, MODEL, SIDECAR, WIDE_CHANNELS, K, UiWorld

ESCAPED = html.escape(HOSTILE, quote=False)


def _rows(page: str) -> list[int]:
    """The channels of a layer page's rows, in page order."""
    return [int(c) for c in re.findall(r'<section class="neuron" id="c(\d+)"', page)]


def _get(web: httpx.Client, url: str, status: int = 200) -> str:
    answer = web.get(url)
    assert answer.status_code == status, (url, answer.status_code, answer.text[:500])
    assert answer.headers["content-type"].startswith("text/html")
    return answer.text


def test_home_lists_the_scans_models_datasets_and_prefills_the_form_from_the_sidecar(
    ui_world: UiWorld, web: httpx.Client
) -> None:
    page = _get(web, "/")
    for scan in (ui_world.scan, ui_world.wide_scan):
        assert f'href="/scans/{scan}"' in page
    assert f'href="/models/{MODEL}"' in page and ">tinted<" in page
    assert 'class="progress state-succeeded"' in page
    form = _get(web, f"/ui/scan-form?model={quote(MODEL)}")
    prefilled = dict(re.findall(r'<input name="(\w+)" value="([^"]*)"', form))
    assert prefilled["size"] == "32 32" and prefilled["scale"] == str(SIDECAR["scale"])
    assert prefilled["mean"] == "0.1 0.2 0.3" and prefilled["std"] == "1 1 1"
    assert 'value="relu_a"' in form and 'value="logits"' in form
    assert "(defaults from" in form


def test_model_page_lists_every_layer_with_op_shape_and_field(
    ui_world: UiWorld, web: httpx.Client
) -> None:
    page = _get(web, f"/models/{MODEL}")
    layers = ui_world.client.get_model(MODEL).layers
    for layer in layers:
        assert f'<td class="mono">{html.escape(layer.name)}</td>' in page
    assert "size 3x3 / stride 1x1 / padding 1x1" in page  # conv_a's field
    assert "8×32×32" in page and "Gemm" in page


def test_layer_page_shows_a_row_per_channel_with_stats_thumbnails_and_escaped_classes(
    ui_world: UiWorld, web: httpx.Client
) -> None:
    page = _get(web, f"/scans/{ui_world.scan}/layers?layer=relu_a")
    stats = ui_world.client.scans.statistics(ui_world.scan, "relu_a")
    assert _rows(page) == [c.channel for c in stats.channels]
    thumbnails = re.findall(r'src="(/ui/patches/[^"]+)"', page)
    assert len(thumbnails) == len(stats.channels) * K
    assert all('loading="lazy"' in tag for tag in re.findall(r"<img [^>]+>", page))
    assert page.count('class="badge dead"') == 1 and f'id="c{DEAD}"' in page
    assert HOSTILE not in page and ESCAPED in page  # the class name is text
    best = max(stats.channels, key=lambda c: c.max_max)
    assert f"{best.max_max:.4g}" in page


def test_layer_page_sorts_filters_and_pages_fifty_channels_at_a_time(
    ui_world: UiWorld, web: httpx.Client
) -> None:
    base = f"/scans/{ui_world.wide_scan}/layers?layer=relu"
    stats = ui_world.client.scans.statistics(ui_world.wide_scan, "relu").channels
    assert len(stats) == WIDE_CHANNELS
    assert _rows(_get(web, base)) == list(range(50))
    assert _rows(_get(web, base + "&page=3")) == list(range(100, WIDE_CHANNELS))
    by_max = [c.channel for c in sorted(stats, key=lambda c: (-c.max_max, c.channel))]
    assert _rows(_get(web, base + "&sort=max&desc=1")) == by_max[:50]
    alive = [c.channel for c in stats if not c.dead]
    assert len(alive) < WIDE_CHANNELS
    assert _rows(_get(web, base + "&hide_dead=1&page=1")) == alive[:50]
    dead = [c.channel for c in stats if c.dead]
    assert _rows(_get(web, base + "&q=dead")) == dead[:50]
    assert _rows(_get(web, base + "&q=c17")) == [17]
    last = _get(web, base + "&page=99")  # past the end: the last page
    assert _rows(last) == list(range(100, WIDE_CHANNELS))


def test_neuron_page_shows_top_and_bottom_k_with_names_scores_and_neighbours(
    ui_world: UiWorld, web: httpx.Client
) -> None:
    page = _get(web, f"/scans/{ui_world.scan}/neurons?layer=relu_b&channel=2")
    top = ui_world.client.scans.neuron(ui_world.scan, "relu_b", 2, k=K, patches=False)[1]
    bottom = ui_world.client.scans.neuron(
        ui_world.scan, "relu_b", 2, k=K, bottom=True, patches=False
    )[1]
    for patch in [*top, *bottom]:
        assert f'title="{html.escape(patch.hit.image)}"' in page
    assert page.count(".png?layer=relu_b&amp;channel=2&amp;rank=") == 2 * K
    assert page.count("bottom=1") == K
    # the responses sections load after the patches, from a fragment of their own
    fragment = f"/scans/{ui_world.scan}/neurons/responses?layer=relu_b&amp;channel=2"
    assert page.index(f'hx-get="{fragment}" hx-trigger="load"') > page.rindex("bottom=1")
    assert f'<noscript><p><a href="{fragment}">' in page and "/ui/typical/" not in page
    lazy = web.get(html.unescape(fragment), headers={"HX-Request": "true"}).text
    assert lazy.count("/ui/typical/") == K  # the images nearest its median response
    assert "<html" not in lazy and 'id="responses"' in lazy
    whole = _get(web, html.unescape(fragment))  # no JavaScript: the link opens a page
    assert "<html" in whole and whole.count("/ui/typical/") == K
    assert 'rel="prev"' in page and "channel=1" in page and 'rel="next"' in page
    first = _get(web, f"/scans/{ui_world.scan}/neurons?layer=relu_b&channel=0")
    assert 'rel="prev"' not in first
    heat = _get(web, f"/scans/{ui_world.scan}/neurons?layer=relu_b&channel=2&render=heatmap")
    assert "render=heatmap" in heat and 'class="toggle on" href' in heat


def test_patch_images_are_the_pngs_the_grpc_neuron_query_renders(
    ui_world: UiWorld, web: httpx.Client
) -> None:
    for render in ("rf", "heatmap"):
        _, patches, _ = ui_world.client.scans.neuron(
            ui_world.scan, "relu_a", 3, k=K, patch_size=96, render=render
        )
        for patch in patches:
            answer = web.get(
                f"/ui/patches/{ui_world.scan}.png",
                params={"layer": "relu_a", "channel": 3, "rank": patch.hit.rank, "render": render},
            )
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
            assert "max-age" in answer.headers["cache-control"]
            assert answer.content == patch.png


def test_classes_class_and_compare_pages_answer_and_escape_class_names(
    ui_world: UiWorld, web: httpx.Client
) -> None:
    answer = ui_world.client.analysis.classes(ui_world.scan, "relu_a")
    page = _get(web, f"/scans/{ui_world.scan}/classes?layer=relu_a")
    assert HOSTILE not in page and ESCAPED in page
    for found in answer.classes:
        assert html.escape(found.name, quote=False) in page
    hostile = next(c for c in answer.classes if c.name == HOSTILE)
    one = _get(web, f"/scans/{ui_world.scan}/classes/{quote(HOSTILE)}?layer=relu_a")
    assert HOSTILE not in one and ESCAPED in one
    assert one.count('<section class="neuron">') == len(hostile.top_channels)
    compare = _get(web, f"/compare?a={ui_world.scan}&b={ui_world.scan}&layer=relu_a")
    overlaps = re.findall(r"</span></span> ([0-9.]+)</td>", compare)
    assert overlaps == ["1.00"] * 8  # a scan against itself: every overlap is 1
    mismatch = _get(web, f"/compare?a={ui_world.scan}&b={ui_world.wide_scan}&layer=relu_a", 400)
    assert "LAYER_NOT_FOUND" in mismatch or "LAYER_SHAPE_MISMATCH" in mismatch


def test_start_scan_form_creates_the_scan_once_per_form_and_redirects_to_it(
    ui_world: UiWorld, web: httpx.Client
) -> None:
    form = {
        "model": MODEL,
        "dataset": "tinted",
        "k": "3",
        "mode": "image",
        "layers": ["relu_b"],
        "size": "32 32",
        "scale": "0.00392",
        "request_id": "form-1",
    }
    first = web.post("/ui/scans", data=form)
    assert first.status_code == 303
    scan_id = first.headers["location"].removeprefix("/scans/")
    again = web.post("/ui/scans", data=form)  # a double submit: the same scan
    assert again.headers["location"] == first.headers["location"]
    states = [s.state for s in ui_world.client.scans.watch(scan_id)]
    assert states[-1] == "succeeded"
    assert ui_world.client.scans.get(scan_id).layers == ("relu_b",)
    page = _get(web, f"/scans/{scan_id}")
    assert "relu_b" in page and "succeeded" in page
    bad = web.post("/ui/scans", data={**form, "size": "big", "request_id": "form-2"})
    assert bad.status_code == 400 and "INVALID_PREPROCESSING" in bad.text


def test_try_an_image_ranks_the_layers_channels_as_onnxruntime_does(
    ui_world: UiWorld, web: httpx.Client, tmp_path
) -> None:
    import onnx

    picture = sorted((ui_world.data_root / "tinted" / "red").iterdir())[0]
    answer = web.post(
        "/try",
        data={"model": MODEL, "layer": "relu_a", "top": "4"},
        files={"image": ("mine.png", picture.read_bytes(), "image/png")},
    )
    assert answer.status_code == 200, answer.text[:400]
    shown = [int(c) for c in re.findall(r"channel (\d+) · ", answer.text)]
    pixels = np.asarray(Image.open(picture).convert("RGB"), dtype=np.float32)
    fed = (pixels * SIDECAR["scale"] - np.asarray(SIDECAR["mean"])) / np.asarray(SIDECAR["std"])
    model = onnx.load(str(ui_world.model_root / f"{MODEL}.onnx"))
    maps = layer_outputs(model, ["relu_a"], fed.transpose(2, 0, 1)[None].astype(np.float32))
    maxima = maps["relu_a"][0].reshape(8, -1).max(axis=1)
    assert shown == sorted(range(8), key=lambda c: (-maxima[c], c))[:4]
    assert answer.text.count('src="data:image/png;base64,') == 4
    broken = web.post(
        "/try",
        data={"model": MODEL, "layer": "relu_a"},
        files={"image": ("x.png", b"not an image", "image/png")},
    )
    assert broken.status_code == 400 and "cannot be decoded" in broken.text


def test_bad_input_gets_an_html_error_page_with_the_status_of_its_code(
    ui_world: UiWorld, web: httpx.Client
) -> None:
    scan = ui_world.scan
    cases = {
        "/scans/0123456789abcdef": (404, "SCAN_NOT_FOUND"),
        f"/scans/{scan}/layers?layer=nope": (400, "LAYER_NOT_FOUND"),
        f"/scans/{scan}/neurons?layer=relu_a&channel=99": (400, "CHANNEL_OUT_OF_RANGE"),
        f"/scans/{scan}/neurons?layer=relu_a&channel=0&render=x": (400, "INVALID_RENDER"),
        f"/scans/{scan}/layers?layer=relu_a&sort=evil": (400, "INVALID_SORT"),
        f"/scans/{scan}/classes/nobody?layer=relu_a": (400, "CLASS_NOT_FOUND"),
        "/models/../../etc/passwd": (404, ""),
        f"/ui/patches/{scan}.png?layer=relu_a&channel=0&rank=99": (400, "RANK_OUT_OF_RANGE"),
        "/ui/static/../../settings.py": (404, ""),
    }
    for url, (status, reason) in cases.items():
        answer = web.get(url)
        assert answer.status_code == status, (url, answer.status_code, answer.text[:300])
        assert reason in answer.text
    hostile = web.get(f"/scans/{scan}/layers", params={"layer": HOSTILE})
    assert hostile.status_code == 400 and HOSTILE not in hostile.text
    assert web.get("/").status_code == 200  # and the server goes on serving


def test_vendored_htmx_and_the_sse_extension_are_served_from_the_package(
    web: httpx.Client,
) -> None:
    for name, marker in (("htmx.min.js", b"htmx"), ("htmx-ext-sse.min.js", b"sse-connect")):
        answer = web.get(f"/ui/static/{name}")
        assert answer.status_code == 200 and marker in answer.content
        assert answer.headers["content-type"].startswith("text/javascript")
    page = web.get("/").text
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert web.get("/ui/static/nothing.js").status_code == 404


def test_report_gallery_still_ships_the_shared_stylesheet(
    ui_world: UiWorld,
    tmp_path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    out = tmp_path / "gallery"
    code = main(["--server", ui_world.client.server, "report", ui_world.scan, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    shared = (out / "static" / "report.css").read_bytes()
    assert shared == httpx.get(f"{ui_world.url}/ui/static/report.css").content
    assert LAYERS
