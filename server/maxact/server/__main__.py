"""`python -m maxact.server`: the same as `maxact serve` (the server's own entry point)."""

from __future__ import annotations

import sys

from maxact.server.app import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
