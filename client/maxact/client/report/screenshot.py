"""Headless Chromium driven through chromedriver's W3C WebDriver HTTP API with urllib (no Python
dependency): `maxact demo` screenshots its gallery with it, and the browser tests use it.

Nothing here installs anything: `missing()` says why Chromium cannot be used (the demo then skips
its screenshot); the tests' set-up (tests/browser.py) installs the Debian packages when missing.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def missing() -> str | None:
    """None when Chromium and chromedriver are installed, else which is missing."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if absent:
        hint = "Debian: apt-get install chromium chromium-driver"
        return f"{' and '.join(absent)} not installed ({hint})"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One chromedriver process and one headless Chromium session."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000) -> None:
        self.port = _free_port()
        self.log = profile.with_suffix(".chromedriver.log")
        self._driver = subprocess.Popen(
            [str(CHROMEDRIVER), f"--port={self.port}", f"--log-path={self.log}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.session = ""
        try:
            self._wait_ready()
            capabilities = {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": str(CHROMIUM),
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


# Resolves once every image in (or near) the viewport has loaded (lazy images further down
# never start; they are not in the picture), or after a time limit.
_WAIT_FOR_VISIBLE_IMAGES = """
var done = arguments[arguments.length - 1];
var limit = Date.now() + arguments[0];
function pending() {
  return Array.prototype.slice.call(document.images).filter(function (img) {
    var box = img.getBoundingClientRect();
    return box.top < window.innerHeight && box.bottom > 0 && !img.complete;
  }).length;
}
(function poll() {
  if (document.readyState === "complete" && (pending() === 0 || Date.now() > limit)) {
    requestAnimationFrame(function () { done(pending()); });
  } else { setTimeout(poll, 50); }
})();
"""


def screenshot_page(
    page: Path, out: Path, width: int = 1400, height: int = 1000, wait_s: float = 15.0
) -> Path:
    """Open a local HTML file in headless Chromium and save the viewport as a PNG."""
    with (
        tempfile.TemporaryDirectory(prefix="maxact-chromium-") as profile,
        Browser(Path(profile) / "profile", width=width, height=height) as browser,
    ):
        browser.open(page.resolve().as_uri())
        browser.run_async(_WAIT_FOR_VISIBLE_IMAGES, int(wait_s * 1000))
        out.parent.mkdir(parents=True, exist_ok=True)
        return browser.screenshot(out)
