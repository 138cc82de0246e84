"""Stacks, channels and percentile normalisation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_dlbio.core import normalisation
from napari_dlbio.core.errors import ConfigError, InputDataError
from napari_dlbio.core.normalisation import (
    as_stack,
    check_finite,
    fit_channels,
    image_channels,
    normalise_percentile,
)


@pytest.mark.parametrize(
    ("shape", "rgb", "expected_shape", "axes"),
    [
        ((5, 6), None, (1, 5, 6), "ZYX"),
        ((4, 5, 6), None, (4, 5, 6), "ZYX"),
        ((5, 6, 3), None, (1, 5, 6, 3), "ZYXC"),
        ((5, 6, 4), None, (1, 5, 6, 4), "ZYXC"),
        # Three slices of 5 x 3: only the caller can tell, so rgb=False decides.
        ((3, 5, 3), False, (3, 5, 3), "ZYX"),
        ((5, 6, 3), True, (1, 5, 6, 3), "ZYXC"),
        ((2, 5, 6, 3), None, (2, 5, 6, 3), "ZYXC"),
    ],
)
def test_as_stack(shape, rgb, expected_shape, axes):
    stack, found = as_stack(np.zeros(shape), rgb=rgb)
    assert stack.shape == expected_shape
    assert found == axes


@pytest.mark.parametrize(
    ("shape", "rgb"), [((7,), None), ((1, 2, 3, 4, 5), None), ((5, 6, 7), True)]
)
def test_as_stack_rejects_other_shapes_naming_them(shape, rgb):
    with pytest.raises(InputDataError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        as_stack(np.zeros(shape), rgb=rgb)


def _colour(slices: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (slices, 3, 4, 3), dtype=np.uint8)


def _grey_as_rgb(grey: np.ndarray, alpha: bool = False) -> np.ndarray:
    rgb = np.repeat(grey[..., np.newaxis], 4 if alpha else 3, axis=-1)
    if alpha:
        rgb[..., 3] = 255
    return rgb


def test_channels_that_fit_are_kept_as_views():
    grey = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    colour = _colour()
    rgba = np.concatenate([colour, np.full((2, 3, 4, 1), 255, np.uint8)], axis=-1)
    for stack, channels, expected in (
        (grey, 1, grey[..., np.newaxis]),
        (colour, 3, colour),
        (rgba, 3, colour),
        # A grey image saved as RGB (or RGBA) is the grey image for a grey model.
        (_grey_as_rgb(grey), 1, grey[..., np.newaxis]),
        (_grey_as_rgb(grey, alpha=True), 1, grey[..., np.newaxis]),
        (_grey_as_rgb(grey), 3, _grey_as_rgb(grey)),
    ):
        fitted = fit_channels(stack, channels)
        np.testing.assert_array_equal(fitted, expected)
        assert np.shares_memory(fitted, stack)


def test_a_grey_model_refuses_a_colour_image_naming_both():
    for stack, image in (
        (_colour(), "3 colour channels (RGB)"),
        (_colour()[..., [0, 1, 2, 0]], "RGBA"),
    ):
        with pytest.raises(InputDataError) as caught:
            fit_channels(stack, 1)
        message = str(caught.value)
        assert message.startswith("This model was trained on grey images (1 channel) but ")
        assert image in message
        assert "Fiji: Image > Type > 8-bit" in message


def test_a_colour_model_refuses_a_grey_image_naming_both():
    grey = np.zeros((2, 3, 4), np.uint8)
    for stack in (grey, grey[..., np.newaxis]):
        with pytest.raises(InputDataError) as caught:
            fit_channels(stack, 3)
        assert str(caught.value).startswith(
            "This model was trained on colour images (3 channels, RGB) but the image is grey "
            "(1 channel)."
        )


def test_one_colour_slice_is_enough_to_refuse_a_grey_model():
    stack = _grey_as_rgb(np.zeros((3, 3, 4), np.uint8))
    stack[2, 1, 1] = (10, 20, 30)
    assert fit_channels(stack[:2], 1).shape == (2, 3, 4, 1)
    with pytest.raises(InputDataError, match="3 colour channels"):
        fit_channels(stack, 1)
    with pytest.raises(InputDataError, match="3 colour channels"):
        fit_channels(stack[2:], 1)


def test_nan_pixels_are_left_to_the_nan_check_not_called_colour():
    stack = _grey_as_rgb(np.zeros((1, 3, 4), np.float32))
    stack[0, 1, 1] = np.nan
    assert fit_channels(stack, 1).shape == (1, 3, 4, 1)
    with pytest.raises(InputDataError, match="NaN"):
        check_finite(fit_channels(stack, 1))


@pytest.mark.parametrize(
    ("shape", "channels", "words"),
    [
        ((1, 2, 2, 2), 3, "colour images (3 channels, RGB) but the image has 2 channels"),
        ((1, 2, 2, 5), 1, "grey images (1 channel) but the image has 5 channels"),
        ((1, 2, 2, 3), 5, "images with 5 channels but the image has 3 colour channels"),
    ],
)
def test_other_channel_counts_are_refused_naming_both(shape, channels, words):
    with pytest.raises(InputDataError, match=re.escape(words)):
        fit_channels(np.arange(np.prod(shape)).reshape(shape), channels)


def test_image_channels_are_what_a_new_model_takes():
    grey = np.zeros((2, 3, 4), np.uint8)
    assert image_channels(grey) == 1
    assert image_channels(_grey_as_rgb(grey)) == 1
    assert image_channels(_grey_as_rgb(grey, alpha=True)) == 1
    assert image_channels(_colour()) == 3
    assert image_channels(np.zeros((2, 3, 4, 2))) == 2
    for stack in (grey, _grey_as_rgb(grey), _colour()):
        fit_channels(stack, image_channels(stack))


def test_check_finite_names_the_slice():
    stack = np.zeros((3, 4, 4), np.float32)
    check_finite(stack)
    stack[2, 1, 1] = np.inf
    with pytest.raises(InputDataError, match="slice 2"):
        check_finite(stack, name="EM stack")
    check_finite(np.zeros((3, 4, 4), np.uint16))


def test_uint16_slices_are_scaled_independently():
    rng = np.random.default_rng(0)
    stack = np.stack(
        [rng.integers(100, 200, (64, 64)), rng.integers(10_000, 60_000, (64, 64))]
    ).astype(np.uint16)
    out = normalise_percentile(stack, low=0, high=100)
    assert out.dtype == np.float32
    for z in range(2):
        assert out[z].min() == pytest.approx(0.0)
        assert out[z].max() == pytest.approx(1.0)
    ranks = np.argsort(stack[1].ravel(), kind="stable")
    assert np.all(np.diff(out[1].ravel()[ranks]) >= 0)


def test_percentiles_leave_outliers_outside_zero_one():
    plane = np.linspace(0, 1, 10_000, dtype=np.float64).reshape(1, 100, 100)
    out = normalise_percentile(plane, low=1, high=99)
    assert out.min() < 0 < 1 < out.max()
    inside = (out >= 0) & (out <= 1)
    assert inside.mean() == pytest.approx(0.98, abs=0.005)


def test_global_normalisation_keeps_slice_differences():
    stack = np.stack([np.full((8, 8), 10.0), np.full((8, 8), 20.0)])
    stack[0, 0, 0] = 0.0
    out = normalise_percentile(stack, low=0, high=100, per_slice=False)
    assert out[1].mean() == pytest.approx(1.0)
    assert out[0, 1, 1] == pytest.approx(0.5)


def test_colour_channels_are_scaled_separately():
    rng = np.random.default_rng(1)
    stack = np.stack([rng.random((1, 16, 16)), 1000 * rng.random((1, 16, 16))], axis=-1)
    out = normalise_percentile(stack, low=0, high=100)
    assert out.shape == (1, 16, 16, 2)
    np.testing.assert_allclose(out.max(axis=(0, 1, 2)), [1, 1], rtol=1e-6)


def test_constant_slice_gives_zeros():
    stack = np.stack([np.full((8, 8), 7, np.uint8), np.arange(64, dtype=np.uint8).reshape(8, 8)])
    out = normalise_percentile(stack)
    assert np.all(out[0] == 0)
    assert np.all(np.isfinite(out))


def test_mostly_empty_slice_falls_back_to_min_max():
    plane = np.zeros((1, 100, 100), np.uint16)
    plane[0, 0, :5] = 1000
    out = normalise_percentile(plane)
    assert np.isfinite(out).all()
    assert out.max() == pytest.approx(1.0)


def test_nan_is_reported_with_its_slice():
    stack = np.zeros((3, 4, 4), np.float32)
    stack[1, 0, 0] = np.nan
    for per_slice in (True, False):
        with pytest.raises(InputDataError, match="slice 1"):
            normalise_percentile(stack, per_slice=per_slice)


@pytest.mark.parametrize(("low", "high"), [(50, 50), (-1, 99), (1, 101)])
def test_bad_percentiles(low, high):
    with pytest.raises(ConfigError):
        normalise_percentile(np.zeros((1, 2, 2)), low=low, high=high)


def test_huge_slices_use_a_subsample(monkeypatch):
    monkeypatch.setattr(normalisation, "MAX_PERCENTILE_SAMPLES", 1000)
    rng = np.random.default_rng(2)
    stack = rng.normal(100, 10, (2, 300, 300)).astype(np.float32)
    out = normalise_percentile(stack, low=1, high=99)
    # A strided sample still puts about 1% of the pixels below 0.
    assert (out < 0).mean() == pytest.approx(0.01, abs=0.01)
    assert out.shape == stack.shape
