"""The --json documents keep the exact shapes docs/cli.md documents."""

from __future__ import annotations

import json

from maxact.common import documents as json_out


def test_number_is_int_when_integral_and_float_when_fractional() -> None:
    assert json_out.number(3.0) == 3 and isinstance(json_out.number(3.0), int)
    assert json_out.number(0.5) == 0.5 and isinstance(json_out.number(0.5), float)
    assert isinstance(json_out.number(-2.0), int)


def test_rf_document_has_the_contract_keys_in_order(field_info) -> None:
    doc = json_out.rf_json(field_info)
    assert list(doc) == [
        "model", "layer", "input", "shape", "rf", "channel_groups", "global_context", "rows",
        "cols",
    ]  # fmt: skip
    assert doc["input"] == {"name": "x", "height": 32, "width": 32}
    assert doc["shape"] == [8, 16, 64]
    assert doc["rf"] == {"size": [7, 7], "stride": [2, 0.5], "padding": [3, 1.25]}
    assert doc["global_context"] is True
    assert doc["rows"] == [[0, 4], [0, 6]]
    assert doc["cols"] == [[0, 5]]


def test_rf_integral_numbers_are_json_ints_and_fractions_json_floats(field_info) -> None:
    text = json.dumps(json_out.rf_json(field_info))
    assert '"size": [7, 7]' in text
    assert '"stride": [2, 0.5]' in text


def test_rf_channel_groups_carry_channels_geometry_rows_and_cols(field_info) -> None:
    groups = json_out.rf_json(field_info)["channel_groups"]
    assert groups[0] == {
        "channels": [0, 3],
        "size": [7, 7],
        "stride": [2, 0.5],
        "padding": [3, 1.25],
        "rows": [[0, 4], [0, 6]],
        "cols": [[0, 5], [0, 5]],
    }
    assert groups[1]["channels"] == [4, 7]


def test_rf_boxes_only_appear_when_a_unit_was_asked(field_info) -> None:
    from dataclasses import replace

    assert "box" not in json_out.rf_json(field_info)
    with_unit = replace(field_info, box=(0, 0, 4, 5), box_unclipped=(-3, -1, 4, 6))
    doc = json_out.rf_json(with_unit)
    assert doc["box"] == [0, 0, 4, 5]
    assert doc["box_unclipped"] == [-3, -1, 4, 6]


def test_layers_document_has_rf_or_null_and_global_context(model_info) -> None:
    doc = json_out.layers_json(model_info)
    assert doc["model"] == "zoo/net"
    by_name = {layer["name"]: layer for layer in doc["layers"]}
    assert list(by_name["conv1"])[:5] == ["name", "op", "shape", "rf", "global_context"]
    assert by_name["conv1"] == {
        "name": "conv1",
        "op": "Conv",
        "shape": [16, 112, 112],
        "rf": {"size": [3, 3], "stride": [2, 2], "padding": [1, 1]},
        "global_context": False,
        "channel_groups": [
            {"channels": [0, 7], "size": [3, 3], "stride": [2, 2], "padding": [1, 1]}
        ],
    }
    assert by_name["weird"]["rf"] is None
    assert by_name["se.mul"]["global_context"] is True
    assert by_name["fc"]["shape"] == [1000]


def test_topk_document_lists_results_best_first_without_patch_files(topk_result) -> None:
    doc = json_out.topk_json(topk_result)
    assert list(doc) == [
        "model",
        "layer",
        "channel",
        "k",
        "mode",
        "images_scanned",
        "results",
        "preprocessing",
    ]
    assert doc["channel"] == 3 and doc["k"] == 2 and doc["mode"] == "image"
    assert doc["images_scanned"] == 40
    assert doc["results"][0] == {
        "rank": 1,
        "image": "a/cat.jpg",
        "score": 12.5,
        "unit": [1, 2],
        "box": [0, 1, 10, 11],
    }
    assert [r["rank"] for r in doc["results"]] == [1, 2]


def test_topk_document_names_patch_files_when_written(topk_result) -> None:
    doc = json_out.topk_json(topk_result, {1: "rank_1.png", 2: "rank_2.png"})
    assert [r["patch"] for r in doc["results"]] == ["rank_1.png", "rank_2.png"]


def test_dumps_is_one_parseable_document(topk_result) -> None:
    text = json_out.dumps(json_out.topk_json(topk_result))
    assert json.loads(text)["model"] == "zoo/net"
