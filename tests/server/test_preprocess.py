"""Preprocessing: the fed values follow the contract and boxes map back through the inverse."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from PIL import Image

from maxact.server.data.preprocess import Preprocessing, resolve
from maxact.server.errors import ServiceError


def test_fed_value_is_pixel_times_scale_minus_mean_over_std_in_bgr_order() -> None:
    prep = resolve(
        Preprocessing(),
        Preprocessing(size=(2, 2), scale=0.5, mean=(1, 2, 3), std=(2, 4, 8), channel_order="bgr"),
        None,
        "nchw",
    )
    image = Image.fromarray(np.full((2, 2, 3), (10, 20, 30), dtype=np.uint8))
    values = prep.to_array(image)
    assert values.shape == (3, 2, 2)
    assert values[:, 0, 0].tolist() == pytest.approx(
        [(30 * 0.5 - 1) / 2, (20 * 0.5 - 2) / 4, (10 * 0.5 - 3) / 8]
    )


def test_resize_shorter_and_center_crop_box_maps_back_exactly() -> None:
    prep = resolve(
        Preprocessing(), Preprocessing(resize_shorter=100, center_crop=(100, 100)), None, "nchw"
    )
    geometry = prep.geometry(200, 400)  # halve: 100 x 200, crop columns 50..150
    assert geometry.to_original((0, 0, 100, 100)) == (0, 100, 200, 300)
    assert geometry.to_original((10, 20, 11, 21)) == (20, 140, 22, 142)


def test_boxes_are_clipped_to_the_original_image() -> None:
    prep = resolve(Preprocessing(), Preprocessing(size=(10, 10)), None, "nchw")
    assert prep.geometry(20, 30).to_original((-3, -3, 12, 12)) == (0, 0, 20, 30)


def test_dynamic_model_without_size_asks_for_one() -> None:
    with pytest.raises(ServiceError) as caught:
        resolve(Preprocessing(), Preprocessing(), None, "nchw")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "INPUT_SIZE_REQUIRED"


def test_request_overrides_model_defaults_field_by_field() -> None:
    defaults = Preprocessing(resize_shorter=256, center_crop=(224, 224), mean=(1, 2, 3))
    prep = resolve(defaults, Preprocessing(std=(2, 2, 2)), (224, 224), "nchw")
    assert (prep.resize_shorter, prep.center_crop, prep.mean, prep.std) == (
        256,
        (224, 224),
        (1, 2, 3),
        (2, 2, 2),
    )
