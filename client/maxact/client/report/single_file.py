"""`maxact report ID --single-file FILE.html`: the report as ONE self-contained page, for
trackers that show an HTML artifact as it is (MLflow renders it from a blob URL, so relative
links break; Argo blocks scripts): every patch a data URI, the CSS inline, no script — the
rows are plain HTML, readable without JavaScript.

It is made from the folder report (written to a temporary folder): its pages' data and
patch files, so both show the same patches.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from markupsafe import Markup

from maxact.client.report import html as g
from maxact.client.report.writer import write_report

_DATA = re.compile(r'<script type="application/json" id="neuron-data">(.*?)</script>', re.S)
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def data_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _layer(report: Path, entry: dict[str, Any], index: int) -> dict[str, Any]:
    """One layer's rows from its page's data, each patch read into a data URI."""
    folder = report / entry["directory"]
    found = _DATA.search((report / entry["page"]).read_text(encoding="utf-8"))
    neurons = json.loads(found.group(1)) if found else []
    for neuron in neurons:
        neuron["patches"] = [
            {"uri": data_uri(folder / file), "rank": rank, "score": score, "image": image}
            for file, rank, score, image in neuron["patches"]
        ]
    return {
        "name": entry["name"],
        "anchor": f"layer-{index}",
        "render": entry["render"],
        "neurons": neurons,
    }


def single_page(report: Path) -> str:
    """The page for the folder report in `report`."""
    mapping = json.loads((report / "report.json").read_text(encoding="utf-8"))
    css = (report / "static" / "report.css").read_text(encoding="utf-8")
    layers = [_layer(report, entry, i) for i, entry in enumerate(mapping["layers"])]
    return g.render(
        "single.html", scan=mapping["scan"], layers=layers, css=Markup(css), tile=g.TILE
    )


def write_single_file(client: Any, scan_id: str, path: Path, **options: Any) -> Path:
    """Write the one-page report of a finished scan to `path` (options: write_report's)."""
    with tempfile.TemporaryDirectory(prefix="maxact-report-") as folder:
        report = Path(folder) / "report"
        write_report(client, scan_id, report, **options)
        page = single_page(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
