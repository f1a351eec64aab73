"""The reference receptive-field table: published numbers, maxact's numbers, the docs page.

`python -m tests.rf.reference_table` rewrites docs/receptive-fields.md from the committed
table (tests/rf/reference_fields.csv); tests/rf/test_reference_table.py fails when maxact's
fields differ from the table or the page is stale.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from maxact.server.rf import ReceptiveFields, compute_receptive_fields

from .reference_nets import BUILDERS

TABLE = Path(__file__).with_name("reference_fields.csv")
PAGE = Path(__file__).parents[2] / "docs" / "receptive-fields.md"


@dataclass(frozen=True)
class Row:
    network: str
    resolution: int
    end_point: str
    size: Fraction
    stride: Fraction
    padding: Fraction


def published() -> list[Row]:
    """The committed table, in its order."""
    lines = [line for line in TABLE.read_text(encoding="utf-8").splitlines() if line[:1] != "#"]
    return [
        Row(
            r["network"],
            int(r["resolution"]),
            r["end_point"],
            *(Fraction(r[k]) for k in ("size", "stride", "padding")),
        )
        for r in csv.DictReader(lines)
    ]


def computed(rows: list[Row]) -> list[Row]:
    """maxact's fields of the same end points, each network built once per resolution.

    Both axes must agree (the networks are square); a disagreement raises naming the row.
    """
    out: list[Row] = []
    built: dict[tuple[str, int], tuple[ReceptiveFields, dict[str, str]]] = {}
    for row in rows:
        key, size = (row.network, row.resolution), row.resolution
        if key not in built:
            model, ends = BUILDERS[row.network](size)
            built[key] = (compute_receptive_fields(model, (size, size)), ends)
        fields, ends = built[key]
        gh, gw = fields.field(ends[row.end_point]).geometry()
        rows_cols = {(g.size, g.stride, g.padding) for g in (gh, gw)}
        assert len(rows_cols) == 1, f"{row.network} {row.end_point}: axes differ {rows_cols}"
        out.append(Row(row.network, row.resolution, row.end_point, gh.size, gh.stride, gh.padding))
    return out


def render(rows: list[Row]) -> str:
    """docs/receptive-fields.md: the table and how it is kept true."""
    head = [
        "# Receptive fields of reference networks",
        "",
        "maxact derives receptive fields from the ONNX graph alone. The table below lists the",
        "published receptive fields of well-known CNNs at a 224 x 224 input, and at 321 x 321",
        "where TF's SAME padding makes the padding depend on the input size (size R, effective",
        "stride S and effective padding P per end point: unit i covers input pixels",
        "`[i*S - P, i*S - P + R)`), as computed for the TF-Slim models by",
        "[google-research/receptive_field](https://github.com/google-research/receptive_field)",
        "(its RECEPTIVE_FIELD_TABLE.md).",
        "",
        "The test suite rebuilds each network's layer geometry with `onnx.helper` (random weights,",
        "a few channels per layer: fields depend on kernels, strides, padding and branches only),",
        "runs maxact's engine on it and requires every number below, on both axes",
        "(`tests/rf/test_reference_table.py`; the table itself is `tests/rf/reference_fields.csv`,",
        "this page is generated from it by `python -m tests.rf.reference_table`). Branches",
        "(Inception's Concat) report the union of their fields, as the published table does;",
        "`maxact layers` shows each branch's own field under `channel_groups`.",
        "",
        "| network | input | end point | receptive field | stride | padding |",
        "|---|---:|---|---:|---:|---:|",
    ]
    body = [
        f"| {r.network} | {r.resolution} | `{r.end_point}` | {r.size} | {r.stride} | {r.padding} |"
        for r in rows
    ]
    return "\n".join([*head, *body]) + "\n"


if __name__ == "__main__":
    PAGE.write_text(render(published()), encoding="utf-8")
    print(f"wrote {PAGE}")
