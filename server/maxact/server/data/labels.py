"""Labels read from disk or kept from a client, bounded in length at the door.

A label names a class: it is echoed in listings, class answers and reports, and every distinct
one costs a row of class statistics, so it is refused (not truncated) past MAX_LABEL_CHARS. A
labels file that cannot be read (not UTF-8, a field past the bound, a broken CSV) makes its
dataset unreadable with that reason; it never fails a call about another dataset.
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from pathlib import Path

MAX_LABEL_CHARS = 512
# a labels.csv row is `path,label`: a path is at most paths.MAX_NAME_CHARS (1024) characters
MAX_FIELD_CHARS = 2048
LABELS_FILE = "labels.csv"


class LabelError(ValueError):
    """A label, or the file holding labels, that the server refuses to read."""


def label_problem(label: str) -> str | None:
    """Why `label` is refused, or None."""
    if len(label) > MAX_LABEL_CHARS:
        return f"a label has {len(label):,} characters, at most {MAX_LABEL_CHARS} are allowed"
    return None


def read_labels_csv(path: Path, ids: Collection[str]) -> dict[str, str]:
    """The labels of `ids` in a `path,label` CSV (other rows are ignored, so the result is
    bounded by the listing, not by the file). Raises LabelError naming the line."""
    csv.field_size_limit(MAX_FIELD_CHARS)  # process-wide; nothing else here reads CSV
    labels: dict[str, str] = {}
    line = 0
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            for row in reader:
                line = reader.line_num
                if len(row) < 2 or row[0].strip() in ("", "path"):
                    continue
                image_id, label = row[0].strip(), row[1].strip()
                problem = label_problem(label)
                if problem is not None:
                    raise LabelError(f"{LABELS_FILE} line {line}: {problem}")
                if image_id in ids:
                    labels[image_id] = label
    except UnicodeDecodeError as exc:
        raise LabelError(
            f"{LABELS_FILE} is not UTF-8 text (byte {exc.start} of a line after line {line})"
        ) from None
    except csv.Error as exc:
        raise LabelError(f"{LABELS_FILE} line {line + 1} is not valid CSV: {exc}") from None
    return labels
