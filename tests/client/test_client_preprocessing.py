"""Preprocessing flags, proto and sidecar JSON agree with each other and with docs/contracts.md."""

from __future__ import annotations

import argparse

import pytest

from maxact.client.demo.fetch import DEMO_PREPROCESSING
from maxact.common.preprocessing import (
    Preprocessing,
    add_preprocessing_arguments,
    parse_number,
    preprocessing_from_args,
)
from maxact.v1 import common_pb2


def _parse(*argv: str) -> Preprocessing | None:
    parser = argparse.ArgumentParser()
    add_preprocessing_arguments(parser)
    return preprocessing_from_args(parser.parse_args(list(argv)))


def test_no_flags_means_model_defaults() -> None:
    assert _parse() is None


def test_every_flag_is_parsed_into_its_field() -> None:
    prep = _parse(
        "--size", "224", "320", "--resize-shorter", "256", "--center-crop", "224", "224",
        "--scale", "0.5", "--mean", "104", "117", "123", "--std", "1", "2", "3",
        "--channel-order", "bgr", "--layout", "nhwc", "--fast-decode",
    )  # fmt: skip
    assert prep == Preprocessing(
        size=(224, 320),
        resize_shorter=256,
        center_crop=(224, 224),
        scale=0.5,
        mean=(104.0, 117.0, 123.0),
        std=(1.0, 2.0, 3.0),
        channel_order="bgr",
        layout="nhwc",
        fast_decode=True,
    )


def test_scale_accepts_a_fraction() -> None:
    assert _parse("--scale", "1/255").scale == pytest.approx(1 / 255, rel=1e-15)


def test_mean_accepts_fractions_and_decimals() -> None:
    assert _parse("--mean", "0.485", "1/2", "3").mean == (0.485, 0.5, 3.0)


@pytest.mark.parametrize("text", ["abc", "1/0", ""])
def test_parse_number_rejects_non_numbers(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_number(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["--size", "224"],
        ["--size", "0", "224"],
        ["--mean", "1", "2"],
        ["--channel-order", "rgba"],
        ["--layout", "chw"],
        ["--resize-shorter", "-1"],
    ],
)
def test_malformed_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2


def test_to_proto_leaves_unset_fields_unset() -> None:
    msg = Preprocessing(mean=(1.0, 2.0, 3.0)).to_proto()
    assert list(msg.mean) == [1.0, 2.0, 3.0]
    assert not msg.HasField("scale")
    assert list(msg.size) == [] and msg.resize_shorter == 0
    assert msg.channel_order == common_pb2.CHANNEL_ORDER_UNSPECIFIED


def test_scale_zero_is_sent_because_it_is_explicit() -> None:
    msg = Preprocessing(scale=0.0).to_proto()
    assert msg.HasField("scale") and msg.scale == 0.0


def test_proto_round_trip_keeps_every_field() -> None:
    prep = Preprocessing(
        size=(10, 20),
        resize_shorter=30,
        center_crop=(8, 9),
        scale=1 / 255,
        mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
        channel_order="rgb",
        layout="nchw",
    )
    assert Preprocessing.from_proto(prep.to_proto()) == prep
    assert Preprocessing.from_proto(Preprocessing().to_proto()) == Preprocessing()


def test_demo_sidecar_parses_and_round_trips_through_dict() -> None:
    prep = Preprocessing.from_dict(DEMO_PREPROCESSING)
    assert prep.channel_order == "bgr" and prep.center_crop == (224, 224)
    assert prep.to_dict() == DEMO_PREPROCESSING


def test_from_dict_rejects_unknown_keys_so_typos_show() -> None:
    with pytest.raises(ValueError, match="sclae"):
        Preprocessing.from_dict({"sclae": 1})


def test_wrong_arity_and_enum_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        Preprocessing(mean=(1.0, 2.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Preprocessing(channel_order="rgba")


def test_sidecar_scalar_mean_and_std_mean_every_channel() -> None:
    prep = Preprocessing.from_dict({"mean": 0.5, "std": [0.2, 0.3, 0.4], "scale": 1})
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.2, 0.3, 0.4) and prep.scale == 1.0


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"std": float("nan")}, "std"),
        ({"pad_value": float("inf")}, "pad_value"),
        ({"mean": "grey"}, "mean"),
        ({"size": [224]}, "size"),
        ({"resize_shorter": 2.5}, "resize_shorter"),
        ({"channel_order": 3}, "channel_order"),
        ({"fast_decode": "yes"}, "fast_decode"),
    ],
)
def test_bad_sidecar_values_raise_value_error_naming_the_field(document: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"'{field}'"):
        Preprocessing.from_dict(document)


def test_detector_fields_round_trip_through_proto_and_dict() -> None:
    prep = Preprocessing(resize_shorter=736, size_multiple=32, mean=(1.0, 2.0, 3.0))
    boxed = Preprocessing(letterbox=(640, 640), pad_value=114.0)
    quick = Preprocessing(resize_shorter=256, center_crop=(224, 224), fast_decode=True)
    for value in (prep, boxed, quick, Preprocessing(fast_decode=False)):
        assert Preprocessing.from_proto(value.to_proto()) == value
        assert Preprocessing.from_dict(value.to_dict()) == value
