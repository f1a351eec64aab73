"""Preprocessing: the fed values follow the contract and boxes map back through the inverse."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maxact.server.data.preprocess import Preprocessing, resolve
from maxact.server.errors import Code, ServiceError


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
    assert caught.value.code == Code.INVALID_ARGUMENT
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


def test_size_multiple_rounds_each_side_to_the_nearest_multiple_and_maps_back() -> None:
    prep = resolve(
        Preprocessing(), Preprocessing(resize_shorter=64, size_multiple=32), None, "nchw"
    )
    # 100 x 180: shorter side 64 -> 64 x 115.2 -> 64 x 115 -> rounded to 64 x 128
    assert prep.input_size_for(100, 180) == (64, 128)
    assert prep.input_size_for(10, 10) == (64, 64)  # small images grow: at least one multiple
    assert prep.input_size_for(1000, 50) == (1280, 64)
    geometry = prep.geometry(100, 180)
    assert (geometry.factor_y, geometry.factor_x) == (0.64, 128 / 180)
    assert geometry.to_original((0, 0, 64, 128)) == (0, 0, 100, 180)
    image = Image.fromarray(np.zeros((100, 180, 3), dtype=np.uint8))
    assert prep.to_array(image).shape == (3, 64, 128)


def test_letterbox_fits_inside_keeps_the_aspect_and_pads_bottom_right_with_pad_value() -> None:
    prep = resolve(
        Preprocessing(), Preprocessing(letterbox=(64, 64), pad_value=100, scale=1.0), None, "nhwc"
    )
    assert prep.fixed_size == (64, 64)
    assert prep.resized_size(20, 40) == (32, 64) and prep.resized_size(40, 20) == (64, 32)
    image = Image.fromarray(np.full((20, 40, 3), 7, dtype=np.uint8))
    values = prep.to_array(image)
    assert values.shape == (64, 64, 3)
    assert (values[:32] == 7).all() and (values[32:] == 100).all()
    geometry = prep.geometry(32, 16)  # scaled by 2 to 64 x 32, columns 32.. padded
    assert geometry.to_original((2, 4, 6, 8)) == (1, 2, 3, 4)
    assert geometry.to_original((0, 20, 64, 64)) == (0, 10, 32, 16)  # the pad is clipped off


def test_a_request_that_sizes_another_way_drops_the_defaults_way_of_sizing() -> None:
    defaults = Preprocessing(letterbox=(640, 640), mean=(1, 2, 3))
    prep = resolve(defaults, Preprocessing(size=(32, 32)), None, "nchw")
    assert (prep.size, prep.letterbox, prep.mean) == ((32, 32), None, (1, 2, 3))
    crop = Preprocessing(resize_shorter=256, center_crop=(224, 224))
    prep = resolve(crop, Preprocessing(resize_shorter=64, size_multiple=32), None, "nchw")
    assert (prep.center_crop, prep.fixed_size) == (None, None)


@pytest.mark.parametrize(
    "request_prep",
    [
        Preprocessing(letterbox=(64, 64), center_crop=(32, 32)),
        Preprocessing(size=(64, 64), size_multiple=32),
        Preprocessing(letterbox=(0, 64)),
    ],
)
def test_contradictory_sizing_is_invalid_preprocessing(request_prep: Preprocessing) -> None:
    with pytest.raises(ServiceError) as caught:
        resolve(Preprocessing(), request_prep, None, "nchw")
    assert caught.value.reason == "INVALID_PREPROCESSING"
