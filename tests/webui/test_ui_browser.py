"""The web UI in headless Chromium (WebDriver) against the real server: navigation from the
home page to a neuron, every patch image loads, a hostile class name is inert text, the
arrow keys step between channels, a running scan's page moves by itself to "succeeded",
the token is asked once, the layout fits a phone, and nothing logs a console error."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from maxact.client import Client
from maxact.server.app import start_server
from tests.browser import LOAD_EVERY_IMAGE, Browser, severe
from tests.datasets import slow_scan
from tests.webui.conftest import HOSTILE, MODEL, K, UiWorld, make_world

pytestmark = pytest.mark.slow  # a browser and real scans

TOKEN = "ui-s3cret"


def wait_for(browser: Browser, script: str, timeout: float = 30.0) -> object:
    """Poll `script` (a function body) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.run(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def click(browser: Browser, css: str) -> None:
    """Click the first element matching `css` and wait for the next page to be loaded."""
    browser.run("window.__old = true; document.querySelector(arguments[0]).click();", css)
    wait_for(browser, "return !window.__old && document.readyState === 'complete';")


def here(browser: Browser) -> tuple[str, dict[str, list[str]]]:
    url = urlparse(str(browser.run("return location.href;")))
    return url.path, parse_qs(url.query)


def all_images_load(browser: Browser) -> int:
    images = browser.run_async(LOAD_EVERY_IMAGE)
    broken = [i["src"] for i in images if not i["complete"] or i["width"] <= 0]
    assert broken == []
    return len(images)


def test_home_to_scan_to_layer_to_neuron_with_every_image_loaded_and_keys_stepping(
    ui_world: UiWorld, browser: Browser
) -> None:
    browser.open(ui_world.url + "/")
    click(browser, f'a[href="/scans/{ui_world.scan}"]')
    assert here(browser)[0] == f"/scans/{ui_world.scan}"
    click(browser, 'a[href$="/layers?layer=relu_a"]')
    assert here(browser) == (f"/scans/{ui_world.scan}/layers", {"layer": ["relu_a"]})
    assert all_images_load(browser) == 8 * K
    # each row has its small histogram of per-image responses (the scan kept them)
    assert browser.run("return document.querySelectorAll('section.neuron .hist').length;") == 8
    # the hostile class name is shown as text and ran nothing
    names = browser.run(
        "return Array.from(document.querySelectorAll('.cls .name')).map(n => n.textContent);"
    )
    assert HOSTILE in names
    assert browser.run(
        "return window.__xss === undefined && !document.querySelector('.cls img, figcaption img');"
    )
    # the filter narrows the rows in place (htmx), and the URL keeps the question
    browser.run(
        "window.__same = 1; var f = document.getElementById('filter');"
        "f.value = 'c3'; f.dispatchEvent(new Event('input', {bubbles: true}));"
    )
    wait_for(browser, "return document.querySelectorAll('section.neuron').length === 1;")
    assert browser.run("return window.__same;") == 1  # no reload
    assert here(browser)[1]["q"] == ["c3"]
    click(browser, "#c3 .channel a")
    assert here(browser)[1] == {"layer": ["relu_a"], "channel": ["3"]}
    # the top-k shows at once, above the fold; the responses sections load below the patches
    assert browser.run(
        "var img = document.querySelector('.patches.large img');"
        "return img.getBoundingClientRect().bottom <= window.innerHeight;"
    )
    wait_for(browser, "return document.querySelector('#responses');")
    assert all_images_load(browser) == 3 * K  # top-k, bottom-k and the typical examples
    browser.run(
        "document.body.dispatchEvent(new KeyboardEvent('keydown', "
        "{key: 'ArrowRight', bubbles: true})); window.__old = true;"
    )
    wait_for(browser, "return !window.__old && document.readyState === 'complete';")
    assert here(browser)[1]["channel"] == ["4"]
    assert browser.run("return document.getElementById('channel').textContent;") == "4"
    browser.run(
        "document.body.dispatchEvent(new KeyboardEvent('keydown', "
        "{key: 'ArrowLeft', bubbles: true})); window.__old = true;"
    )
    wait_for(browser, "return !window.__old && document.readyState === 'complete';")
    assert here(browser)[1]["channel"] == ["3"]
    click(browser, 'a.toggle[href$="render=heatmap"]')
    wait_for(browser, "return document.querySelector('#responses');")
    assert all_images_load(browser) == 3 * K
    assert severe(browser.console()) == []


def test_classes_class_compare_and_try_pages_render_in_the_browser_without_errors(
    ui_world: UiWorld, browser: Browser
) -> None:
    browser.open(f"{ui_world.url}/scans/{ui_world.scan}/classes?layer=relu_a")
    assert (
        browser.run("return document.querySelectorAll('table.classes-table tbody tr').length") == 3
    )
    browser.run(  # open the hostile class's page by its link
        "window.__old = true; Array.from(document.querySelectorAll('table.classes-table a'))"
        ".find(a => a.textContent === arguments[0]).click();",
        HOSTILE,
    )
    wait_for(browser, "return !window.__old && document.readyState === 'complete';")
    assert browser.run("return document.querySelector('h1 .name').textContent;") == HOSTILE
    assert all_images_load(browser) > 0
    browser.open(f"{ui_world.url}/compare?a={ui_world.scan}&b={ui_world.scan}&layer=relu_b")
    assert browser.run("return document.querySelectorAll('table.grid tbody tr').length") == 6
    browser.open(f"{ui_world.url}/try?scan={ui_world.scan}&layer=relu_a")
    assert browser.run("return document.querySelector('select[name=model]').value;") == MODEL
    assert browser.run("return window.__xss === undefined;")
    assert severe(browser.console()) == []


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[tuple[str, Client]]:
    model_root, data_root = tmp_path / "models", tmp_path / "data"
    slow_scan(model_root, data_root, 240, seed=3)
    with (
        start_server(
            model_root, data_root, device="cpu", store=tmp_path / "s.sqlite", checkpoint_images=16
        ) as running,
        Client(running.address, timeout=120) as client,
    ):
        yield running.http_url, client


def open_running(slow_server: tuple[str, Client], browser: Browser, path: str) -> str:
    """Start a scan, open its page at `path` (after the scan's id) and mark the page (a reload
    would lose the mark); the scan's id."""
    url, client = slow_server
    scan = client.scans.create("heavy", ["relu5"], "many", k=3)
    browser.open(f"{url}/scans/{scan.id}{path}")
    browser.run("window.__marker = 'same page';")
    return scan.id


def test_a_running_scans_page_moves_without_reload_and_reaches_succeeded(
    slow_server: tuple[str, Client], browser: Browser
) -> None:
    open_running(slow_server, browser, "")
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = browser.run(
            "return [document.querySelector('.progress .state').textContent,"
            " document.querySelector('.progress .count').textContent];"
        )
        if not seen or seen[-1] != tuple(state):
            seen.append(tuple(state))
        if state[0] == "succeeded":
            break
        time.sleep(0.05)
    assert seen[-1][0] == "succeeded", seen
    assert seen[-1][1].startswith("240 / 240")
    assert any(s == "running" and not c.startswith(("0 ", "240 ")) for s, c in seen), seen
    assert browser.run("return window.__marker;") == "same page"  # never reloaded
    # the finished scan's layers turn into links without a reload
    wait_for(browser, "return document.querySelector('#scan-layers a[href*=\"/layers?layer=\"]');")
    assert browser.run("return window.__marker;") == "same page"
    assert severe(browser.console()) == []


def test_with_a_token_the_ui_asks_for_it_once_then_every_page_and_image_works(
    tmp_path: Path, browser: Browser
) -> None:
    model_root, data_root = make_world(tmp_path)
    with (
        start_server(
            model_root, data_root, device="cpu", store=tmp_path / "s.sqlite", auth_token=TOKEN
        ) as running,
        Client(running.address, timeout=120, token=TOKEN) as client,
    ):
        scan = client.scans.create(MODEL, ["relu_a"], "tinted", k=K)
        assert [s.state for s in client.scans.watch(scan.id)][-1] == "succeeded"
        target = f"/scans/{scan.id}/layers?layer=relu_a"
        browser.open(running.http_url + target)
        assert here(browser)[0] == "/login"
        browser.run(
            "document.getElementById('token').value = 'wrong';"
            "window.__old = true; document.querySelector('form.login').submit();"
        )
        wait_for(browser, "return !window.__old && document.readyState === 'complete';")
        assert browser.run("return document.querySelector('.error').textContent;")
        browser.run(
            "document.getElementById('token').value = arguments[0];"
            "window.__old = true; document.querySelector('form.login').submit();",
            TOKEN,
        )
        wait_for(browser, "return !window.__old && document.readyState === 'complete';")
        assert here(browser) == (f"/scans/{scan.id}/layers", {"layer": ["relu_a"]})
        assert all_images_load(browser) == 8 * K
        browser.open(f"{running.http_url}/scans/{scan.id}/neurons?layer=relu_a&channel=1")
        assert here(browser)[0].endswith("/neurons")  # asked once: the cookie carries it
        assert all_images_load(browser) == 3 * K
        assert severe(browser.console()) == [] or all(
            "401" in e.get("message", "") for e in severe(browser.console())
        )


def test_pages_fit_a_phone_screen(ui_world: UiWorld, tmp_path: Path, chromium: None) -> None:
    with Browser(tmp_path / "phone-profile", width=390, height=844) as phone:
        for path in (
            "/",
            f"/scans/{ui_world.scan}/layers?layer=relu_a",
            f"/scans/{ui_world.scan}/neurons?layer=relu_a&channel=2",
        ):
            phone.open(ui_world.url + path)
            all_images_load(phone)
            width = phone.run("return document.documentElement.scrollWidth;")
            assert width <= 392, (path, width)
        assert severe(phone.console()) == []


def test_a_running_scans_layer_page_shows_partial_figures_then_the_final_thumbnails(
    slow_server: tuple[str, Client], browser: Browser
) -> None:
    client = slow_server[1]
    scan = open_running(slow_server, browser, "/layers?layer=relu5")
    # after the first checkpoint: a row per channel with the figures so far, no thumbnails
    wait_for(browser, "return document.querySelector('.card.partial');", timeout=120)
    assert browser.run("return document.querySelectorAll('section.neuron').length;") == 32
    assert browser.run("return document.querySelectorAll('#rows img').length;") == 0
    # at the end: the same rows with their thumbnails, without a reload
    wait_for(browser, "return document.querySelectorAll('#rows img').length === 32 * 3;", 240)
    assert not browser.run("return document.querySelector('.card.partial');")
    assert browser.run("return window.__marker;") == "same page"
    assert client.scans.get(scan).state == "succeeded"
    assert all_images_load(browser) == 32 * 3
    assert severe(browser.console()) == []


def test_a_running_scans_neuron_page_shows_its_ranking_so_far_then_the_final_top_k(
    slow_server: tuple[str, Client], browser: Browser
) -> None:
    client = slow_server[1]
    scan = open_running(slow_server, browser, "/neurons?layer=relu5&channel=1")
    # after the first checkpoint: the ranking so far, names and scores, no patches yet
    wait_for(browser, "return document.querySelectorAll('table.ranking td.image').length;", 120)
    assert browser.run("return document.querySelector('.card.partial') !== null;")
    assert browser.run("return document.querySelectorAll('main img').length;") == 0
    # at the end: the final top-k and bottom-k patches, swapped in without a reload
    wait_for(browser, "return document.querySelectorAll('.patches.large img').length === 6;", 240)
    assert browser.run("return window.__marker;") == "same page"
    assert not browser.run("return document.querySelector('.card.partial');")
    shown = browser.run(
        "return Array.from(document.querySelectorAll('.patches.large')[0]"
        ".querySelectorAll('img')).map(function (i) { return i.title; });"
    )
    final = client.scans.neuron(scan, "relu5", 1, k=3, patches=False)[1]
    assert shown == [p.hit.image for p in final]
    wait_for(browser, "return document.querySelector('#responses');")  # then loaded lazily
    assert all_images_load(browser) == 6 + 3  # top, bottom and the typical examples
    assert severe(browser.console()) == []
