"""Headless Chromium driven through chromedriver's W3C WebDriver HTTP API with urllib, for the
browser tests of the gallery (they click, sort, filter and read the console; Chromium's own
`--screenshot`, which maxact ships, cannot). Test code only: the shipped package does not need it.

Nothing here installs anything: `make sysdeps` (run by `make test`) installs Debian's chromium and
chromium-driver where it can and records what it could not install; a browser test skips with
that reason, and fails when the browser is missing although that step never ran.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from maxact.client.report.screenshot import find_chromium

# What `make sysdeps` could not install (written by scripts/sysdeps.sh into the venv).
SYSDEPS_MISSING = Path(sys.prefix) / "sysdeps-missing.txt"


def chromedriver() -> Path | None:
    found = shutil.which("chromedriver")
    return Path(found) if found else None


def chromium_binary() -> Path:
    browser = find_chromium()
    assert browser is not None, "chromium went missing"
    return browser


def browser_missing(driver: bool = True) -> str | None:
    """None when Chromium (and with `driver` chromedriver) can run; else the reason
    `make sysdeps` recorded for not installing them. Missing although that step never ran:
    a failure, not a skip."""
    absent = [
        name
        for name, path in (("chromium", find_chromium()), ("chromedriver", chromedriver()))
        if path is None and (driver or name == "chromium")
    ]
    if not absent:
        return None
    if SYSDEPS_MISSING.is_file():
        return SYSDEPS_MISSING.read_text(encoding="utf-8").strip()
    raise AssertionError(
        f"{' and '.join(absent)} not installed: run `make sysdeps` (or `make test`), which "
        "installs them or records why it cannot"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LOAD_EVERY_IMAGE = """
var done = arguments[arguments.length - 1];
var limit = arguments.length > 1 ? arguments[0] : 20000;  // ms
var images = Array.prototype.slice.call(document.images);
var started = Date.now();
// scroll each image into view, as a reader would: lazy images load only near the viewport
images.forEach(function (img) { img.scrollIntoView({block: "center"}); });
(function poll() {
  images.forEach(function (img) { if (!img.complete) { img.scrollIntoView({block: "center"}); } });
  var pending = images.filter(function (img) { return !img.complete; }).length;
  if (pending === 0 || Date.now() - started > limit) {
    window.scrollTo(0, 0);
    done(images.map(function (img) {
      return {src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth};
    }));
  } else { setTimeout(poll, 50); }
})();
"""


def severe(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The console entries that are errors (failed loads, exceptions)."""
    return [e for e in entries if e.get("level") in ("SEVERE", "ERROR")]


# Chromium's windows are never narrower than this; narrower screens are emulated.
MIN_WINDOW_WIDTH = 500


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One chromedriver process and one headless Chromium session."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000) -> None:
        self.port = _free_port()
        self.log = profile.with_suffix(".chromedriver.log")
        self._driver = subprocess.Popen(
            [str(chromedriver()), f"--port={self.port}", f"--log-path={self.log}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.session = ""
        try:
            self._wait_ready()
            capabilities = {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": str(chromium_binary()),
                    "args": [
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--hide-scrollbars",
                        "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--disable-dev-shm-usage",
                        f"--window-size={width},{height}",
                        f"--user-data-dir={profile}",
                    ],
                },
                "goog:loggingPrefs": {"browser": "ALL"},
            }
            if width < MIN_WINDOW_WIDTH:  # a phone: emulate its screen (windows stop at 500)
                metrics = {"width": width, "height": height, "pixelRatio": 1.0}
                capabilities["goog:chromeOptions"]["mobileEmulation"] = {"deviceMetrics": metrics}
            value = self._request(
                "POST", "/session", {"capabilities": {"alwaysMatch": capabilities}}
            )
            self.session = value["sessionId"]
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._driver.poll() is not None:
                raise WebDriverError(f"chromedriver exited with {self._driver.returncode}")
            try:
                if self._request("GET", "/status").get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.1)
        raise WebDriverError("chromedriver did not become ready")

    def _request(self, method: str, path: str, body: object = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise WebDriverError(f"{method} {path}: HTTP {error.code}: {detail[:500]}") from None
        return payload.get("value", payload)

    def _session(self, method: str, path: str, body: object = None) -> Any:
        return self._request(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def run(self, script: str, *args: object) -> Any:
        """Run `script` as a function body (return its value)."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def run_async(self, script: str, *args: object) -> Any:
        """Run `script`; it ends by calling arguments[arguments.length - 1](value)."""
        return self._session("POST", "/execute/async", {"script": script, "args": list(args)})

    def select(self, css: str, value: str) -> None:
        """Choose an <option> the way a user does: set the value and fire `change`."""
        self.run(
            "var el = document.querySelector(arguments[0]); el.value = arguments[1];"
            "el.dispatchEvent(new Event('change', {bubbles: true}));",
            css,
            value,
        )

    def console(self) -> list[dict[str, Any]]:
        """Browser log entries since the last call (console messages, failed loads)."""
        return list(self._session("POST", "/se/log", {"type": "browser"}))

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))
        return path

    def close(self) -> None:
        try:
            if self.session:
                self._session("DELETE", "")
        except (OSError, WebDriverError):
            pass
        finally:
            self.session = ""
            self._driver.terminate()
            try:
                self._driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._driver.kill()
                self._driver.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
