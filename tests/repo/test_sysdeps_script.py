"""scripts/sysdeps.sh (run by `make test`) as root on a Debian-like machine: apt-get's log is
kept off the terminal, which gets one line per package. The apt-get here is a stand-in script
on PATH that prints a real-sized log and installs the three commands; nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sysdeps.sh"
TOOLS = ("sh", "dirname", "mkdir", "rm", "mktemp", "sed", "tail", "cat", "chmod")

FAKE_APT = """#!/bin/sh
# apt-get stand-in: a verbose log, then the two commands appear
[ "$1" = install ] || exit 0
for i in $(seq 1 40); do
  echo "Get:$i http://deb.example/debian bookworm/main lib$i 1.0 [10 kB]"
done
echo "Unpacking chromium (120.0-1) ..."
echo "Setting up chromium (120.0-1) ..."
echo "Setting up chromium-driver (120.0-1) ..."
echo "Setting up postgresql-15 (15.18-0+deb12u1) ..."
echo "Setting up postgresql (15+248) ..."
echo "Processing triggers for man-db (2.11) ..."
printf '#!/bin/sh\\n' > "$BIN/chromium"
printf '#!/bin/sh\\n' > "$BIN/chromedriver"
mkdir -p "$SYSDEPS_POSTGRESQL_ROOT/15/bin"
printf '#!/bin/sh\\n' > "$SYSDEPS_POSTGRESQL_ROOT/15/bin/initdb"
chmod +x "$BIN/chromium" "$BIN/chromedriver" "$SYSDEPS_POSTGRESQL_ROOT/15/bin/initdb"
"""


@pytest.mark.skipif(os.name != "posix", reason="a POSIX shell script")
def test_apt_get_output_is_one_line_per_package(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (*TOOLS, "seq", "printf"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")  # root, as the script requires
    (bin_dir / "apt-get").write_text(FAKE_APT)
    for name in ("id", "apt-get"):
        (bin_dir / name).chmod(0o755)
    status = tmp_path / "missing.txt"
    run = subprocess.run(
        [str(bin_dir / "sh"), str(SCRIPT), str(status)],
        env={
            "PATH": str(bin_dir),
            "BIN": str(bin_dir),
            "SYSDEPS_POSTGRESQL_ROOT": str(tmp_path / "postgresql"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "sysdeps: apt-get install chromium chromium-driver postgresql",
        "sysdeps: installed chromium 120.0-1",
        "sysdeps: installed chromium-driver 120.0-1",
        "sysdeps: installed postgresql-15 15.18-0+deb12u1",
        "sysdeps: installed postgresql 15+248",
    ]
    assert not status.exists()
