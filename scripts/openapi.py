"""Write the HTTP API's OpenAPI document as a real server serves it (docs/openapi.json is
this output, committed; `make lint` fails when it is stale).

    python scripts/openapi.py docs/openapi.json     # write
    python scripts/openapi.py --check docs/openapi.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

from maxact.server.app import start_server


def served_schema() -> str:
    """/openapi.json of an in-process server on free loopback ports, stably formatted."""
    with tempfile.TemporaryDirectory(prefix="maxact-openapi-") as folder:
        root = Path(folder)
        (root / "models").mkdir()
        with (
            start_server(root / "models", device="cpu", store=root / "s.sqlite") as server,
            urllib.request.urlopen(f"{server.http_url}/openapi.json", timeout=30) as answer,
        ):
            schema = json.loads(answer.read())
    schema["info"].pop("version", None)  # the installed version is not part of the contract
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args()
    schema = served_schema()
    if args.check:
        if not args.path.is_file() or args.path.read_text(encoding="utf-8") != schema:
            print(f"{args.path} is stale: run 'make openapi' and commit it", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(schema, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
