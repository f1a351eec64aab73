"""Headless Chromium for tests, driven through chromedriver's W3C WebDriver HTTP API with urllib
(no Python dependency). The Debian packages `chromium` and `chromium-driver` are installed on
first use when missing (CI runs as root); tests skip, naming why, only when that is impossible.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
INSTALL_TIMEOUT_S = 900


def ensure_chromium() -> str | None:
    """Install chromium + chromium-driver with apt-get when missing; None when ready, else why
    they cannot be had (the reason a test skips with)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return "chromium is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "chromium is not installed and installing it with apt-get needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = [apt, "install", "-y", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
    )
    if done.returncode != 0:  # stale package lists: refresh once and retry
        subprocess.run(
            [apt, "update"], env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
    if done.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"apt-get install {' '.join(PACKAGES)} failed: {' | '.join(tail)}"
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
