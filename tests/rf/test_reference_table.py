"""maxact's receptive fields of reference networks equal the published table, and the docs
page shows that table (regenerate it with `python -m tests.rf.reference_table`)."""

from __future__ import annotations

import pytest

from .reference_table import PAGE, computed, published, render

BUILDS = sorted({(row.network, row.resolution) for row in published()})


def test_the_table_covers_five_reference_networks_with_their_end_points() -> None:
    rows = published()
    networks = sorted({network for network, _ in BUILDS})
    assert networks == ["alexnet_v2", "inception_v3", "mobilenet_v1", "resnet_v1_50", "vgg_16"]
    assert len(rows) == 74
    assert len({(r.network, r.resolution, r.end_point) for r in rows}) == len(rows)


@pytest.mark.parametrize(("network", "resolution"), BUILDS)
def test_fields_of_a_reference_network_equal_the_published_size_stride_and_padding(
    network: str, resolution: int
) -> None:
    rows = [row for row in published() if (row.network, row.resolution) == (network, resolution)]
    assert rows
    assert computed(rows) == rows


def test_the_docs_page_is_the_rendered_table() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(published()), (
        "docs/receptive-fields.md is stale: run `python -m tests.rf.reference_table`"
    )
