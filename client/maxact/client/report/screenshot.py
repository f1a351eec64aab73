"""Screenshots of a local HTML page with Chromium's own headless mode
(`chromium --headless --screenshot=FILE`): one short-lived browser process, no driver, no
Python dependency. `maxact demo` pictures its gallery with it.

Nothing here installs anything: `missing()` says why Chromium cannot be used (the demo then
skips its screenshot); `make sysdeps` installs it where it can.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# Names the browser goes by on PATH, most likely first (Debian: chromium).
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# An explicit browser binary; None: the first of BROWSER_NAMES found on PATH.
CHROMIUM: Path | None = None
TIMEOUT_S = 120.0


class ScreenshotError(RuntimeError):
    """Chromium ran but wrote no picture (its last output lines say why)."""


def find_chromium() -> Path | None:
    """The browser to run, or None when there is none."""
    if CHROMIUM is not None:
        return CHROMIUM if CHROMIUM.exists() else None
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def missing() -> str | None:
    """None when Chromium can be run, else why not (and what to install)."""
    if find_chromium() is not None:
        return None
    wanted = str(CHROMIUM) if CHROMIUM is not None else " / ".join(BROWSER_NAMES)
    return f"{wanted} not installed (Debian: apt-get install chromium; or run `make sysdeps`)"


def chromium_command(browser: Path, profile: Path, width: int, height: int) -> list[str]:
    """The browser's command line, without the page and output: headless, and kept off the
    network (no updates, sync, first-run or background requests) with a throw-away profile."""
    flags = [
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        # Let the page's timers and image loads run (virtually) before the picture is taken.
        "--virtual-time-budget=10000",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
    return [str(browser), *flags]


def screenshot_page(page: Path, out: Path, width: int = 1400, height: int = 1000) -> Path:
    """Open a local HTML file in headless Chromium and save the viewport as a PNG at `out`.
    OSError when there is no browser, ScreenshotError when it writes no picture."""
    return screenshot_url(page.resolve().as_uri(), out, width, height)


def screenshot_url(url: str, out: Path, width: int = 1400, height: int = 1000) -> Path:
    """Like `screenshot_page` for any URL (the demo pictures its server's web UI with it)."""
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError(missing())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="maxact-chromium-") as profile:
        command = [
            *chromium_command(browser, Path(profile), width, height),
            f"--screenshot={out.resolve()}",
            url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0 or not out.is_file():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise ScreenshotError(f"{browser.name} exited with {done.returncode}: {tail}")
    return out
