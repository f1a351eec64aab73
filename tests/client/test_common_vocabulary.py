"""The shared vocabulary (maxact.common): enums that print and serialise as the words they
replaced, the statistics record that reads and writes the stored JSON byte for byte, and the
scan resource name built in one place."""

from __future__ import annotations

import json

import pytest

from maxact.common.kinds import ChannelOrder, Layout, RenderMode
from maxact.common.preprocessing import Preprocessing
from maxact.common.resources import scan_id, scan_name
from maxact.common.statistics import LayerStatistics
from maxact.v1 import common_pb2

# a layer's document exactly as servers before the typed record stored it (key order too)
LABELLED = (
    '{"images": 4, "mean": [0.5, 0.0], "max": [1.5, null], "firing_rate": [0.75, 0.0], '
    '"dead": [false, true], "classes": ["cat", "dog"], "class_mean": [[0.25, null], [0.75, 0.0]], '
    '"class_images": [2, 2], "class_mean_clipped": [[0.25, null], [0.75, 0.0]], '
    '"selectivity": [0.5, 0.0], "preferred_class": [1, 0], '
    '"top_units_per_class": {"cat": [], "dog": [0]}, "top_class_histogram": [[1, 2], [0, 0]]}'
)
UNLABELLED = (
    '{"images": 2, "mean": [1.0], "max": [2.0], "firing_rate": [1.0], "dead": [false], '
    '"classes": []}'
)
OLDER = (  # an older server: class means without the clipped ones
    '{"images": 2, "mean": [1.0], "max": [2.0], "firing_rate": [1.0], "dead": [false], '
    '"classes": ["a", "b"], "class_mean": [[1.0], [1.0]], "selectivity": [0.0], '
    '"preferred_class": [0], "top_units_per_class": {"a": [], "b": []}}'
)


@pytest.mark.parametrize("stored", [LABELLED, UNLABELLED, OLDER])
def test_stored_statistics_read_back_and_write_byte_for_byte(stored: str) -> None:
    record = LayerStatistics.from_json(json.loads(stored))
    assert json.dumps(record.to_json()) == stored


def test_statistics_fields_are_typed_not_looked_up_by_key() -> None:
    labelled = LayerStatistics.from_json(json.loads(LABELLED))
    assert labelled.labelled and labelled.channels == 2 and labelled.max[1] is None
    older = LayerStatistics.from_json(json.loads(OLDER))
    assert older.class_mean_clipped is None and older.class_images is None  # outdated answer
    assert not LayerStatistics.from_json(json.loads(UNLABELLED)).labelled


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"images": 2, "mean": [1.0], "max": [2.0], "firing_rate": [1.0]}, TypeError),  # no dead
        ({**json.loads(OLDER), "class_mean": None}, KeyError),  # selectivity of no class means
        ([1, 2], AttributeError),  # not an object
    ],
)
def test_a_document_that_is_not_a_statistics_record_is_refused(
    document: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        LayerStatistics.from_json(document)  # type: ignore[arg-type]


def test_preprocessing_enums_print_and_serialise_as_their_words() -> None:
    prep = Preprocessing(layout="nhwc", channel_order="bgr")
    assert prep.layout is Layout.NHWC and prep.channel_order is ChannelOrder.BGR
    assert json.dumps(prep.to_dict()) == '{"channel_order": "bgr", "layout": "nhwc"}'
    assert f"{prep.layout} {prep.layout!r} {prep.layout!s}" == "nhwc 'nhwc' nhwc"
    assert prep.layout == "nhwc"
    wire = prep.to_proto()
    assert (wire.layout, wire.channel_order) == (
        common_pb2.LAYOUT_NHWC,
        common_pb2.CHANNEL_ORDER_BGR,
    )
    assert Preprocessing.from_proto(wire) == prep
    assert Preprocessing.from_proto(common_pb2.Preprocessing()).layout is None
    with pytest.raises(ValueError, match="layout must be nchw or nhwc"):
        Preprocessing(layout="hwc")


def test_render_modes_map_to_the_wire_and_back() -> None:
    for mode in RenderMode:
        assert RenderMode.from_proto(mode.to_proto()) is mode
    assert RenderMode.from_proto(common_pb2.PATCH_RENDER_UNSPECIFIED) is RenderMode.RF
    with pytest.raises(ValueError, match="unknown patch render 99"):
        RenderMode.from_proto(99)


def test_a_scan_resource_name_is_built_and_read_in_one_place() -> None:
    assert scan_name("abc") == scan_name("scans/abc") == "scans/abc"
    assert scan_id("scans/abc") == scan_id("abc") == "abc"
