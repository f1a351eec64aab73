"""Headless Chromium for tests: the driver is maxact.client.screenshot (chromedriver's W3C WebDriver
HTTP API over urllib, no Python dependency). Here the Debian packages `chromium` and
`chromium-driver` are installed on first use when missing (CI runs as root); tests skip, naming
why, only when that is impossible.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from maxact.client.report.screenshot import CHROMEDRIVER, CHROMIUM, Browser, WebDriverError

__all__ = ["CHROMEDRIVER", "CHROMIUM", "Browser", "WebDriverError", "ensure_chromium"]

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
