"""A neuron scan over an iterator of images (a stream of unknown length) holds only the ids of
ranked and in-flight images, and ranks exactly like the same images given as a list, unreadable
ones included (they come out of the reader before the batch still filling before them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from maxact.server.data.reader import ImageSource, file_source
from maxact.server.scan.neuron import NeuronQuery, NeuronScan, ScanCallbacks
from tests.onnx_models import random_cnn
from tests.scan.helpers import load, prep_for, write_random_images

COUNT = 300


@pytest.fixture
def world(tmp_path: Path) -> tuple[object, list[str], Path]:
    model = load(random_cnn(size=32), tmp_path / "models", "cnn")
    data = tmp_path / "data"
    ids = write_random_images(data, COUNT, 32)
    for i in range(5, COUNT, 37):  # corrupt files in the middle of batches
        (data / ids[i]).write_bytes(b"not an image")
    return model, ids, data


@pytest.mark.parametrize(
    "query",
    [
        NeuronQuery("relu_b", 2, k=5),
        NeuronQuery("conv_a", 1, k=6, mode="position", bottom=True),
        NeuronQuery("conv_b", 0, unit=(1, 2), k=4),
    ],
    ids=["engine_image", "engine_position_bottom", "single_unit"],
)
def test_stream_of_sources_ranks_like_the_list_and_holds_only_ranked_and_in_flight_ids(
    world: tuple[object, list[str], Path], query: NeuronQuery
) -> None:
    model, ids, data = world
    prep = prep_for(model, 32)  # type: ignore[arg-type]
    layer = model.layer(prep.input_size, query.layer)  # type: ignore[attr-defined]
    listed = [file_source(i, image_id, data / image_id) for i, image_id in enumerate(ids)]

    def streamed() -> Iterator[ImageSource]:
        yield from listed

    from_list = NeuronScan(model, layer, query, prep).run(listed, ScanCallbacks())  # type: ignore[arg-type]
    scan = NeuronScan(model, layer, query, prep)  # type: ignore[arg-type]
    held: list[int] = []
    totals: list[int] = []
    outcome = scan.run(
        streamed(),
        ScanCallbacks(
            reduced=lambda indices: held.append(scan.ids_held),
            progress=lambda done, total, failed: totals.append(total),
        ),
    )
    assert outcome.hits == from_list.hits
    assert (outcome.images_scanned, outcome.images_failed) == (COUNT - 8, 8)
    window = 4 * scan.batch_size  # the reader's window is at most this here
    assert max(held) <= query.k + window + scan.batch_size
    assert set(totals) == {0}  # an iterator's total is unknown
