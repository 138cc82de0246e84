"""Tiles, blending and stitching: seams must be invisible."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_dlbio.core.errors import ConfigError
from napari_dlbio.core.tiling import (
    Stitcher,
    blending_window,
    pad_to_multiple,
    tile_grid,
    tile_origins,
)

# (tile, overlap) pairs with 0 <= overlap < tile.
TILINGS = st.integers(1, 40).flatmap(
    lambda tile: st.tuples(st.just(tile), st.integers(0, tile - 1))
)


def test_tile_origins_end_flush_with_the_edge():
    assert tile_origins(100, 32, 8) == [0, 24, 48, 68]
    assert tile_origins(32, 32, 8) == [0]
    assert tile_origins(10, 32, 8) == [0]


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (8, 8), (8, -1)])
def test_impossible_tiling_is_a_config_error(tile, overlap):
    with pytest.raises(ConfigError):
        tile_origins(100, tile, overlap)


def test_blending_window_shape_and_values():
    window = blending_window(16, 4)
    assert window.shape == (16, 16)
    assert window.dtype == np.float32
    assert (window > 0).all()
    assert (window <= 1).all()
    np.testing.assert_array_equal(window[4:12, 4:12], 1)
    # Neighbouring tiles shifted by tile - overlap sum to one across the overlap.
    edge = window[8]
    np.testing.assert_allclose(edge[12:] + edge[:4], 1, rtol=1e-6)
    np.testing.assert_array_equal(blending_window(8, 0), 1)


@settings(max_examples=80, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    tiling=TILINGS,
)
def test_tiles_cover_the_image(shape, tiling):
    tile, overlap = tiling
    cover = np.zeros(shape, int)
    for rows, cols in tile_grid(shape, tile, overlap):
        assert rows.stop - rows.start == min(tile, shape[0])
        assert cols.stop - cols.start == min(tile, shape[1])
        assert rows.stop <= shape[0]
        assert cols.stop <= shape[1]
        cover[rows, cols] += 1
    assert (cover >= 1).all()


def _stitch(image, tile, overlap, predict):
    shape = image.shape[:2]
    stitcher = Stitcher(shape, image.shape[2])
    window = blending_window(tile, overlap)
    for index, (rows, cols) in enumerate(tile_grid(shape, tile, overlap)):
        h, w = rows.stop - rows.start, cols.stop - cols.start
        stitcher.add((rows, cols), predict(image[rows, cols], index), window[:h, :w])
    return stitcher.result()


@settings(max_examples=80, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    channels=st.integers(1, 3),
    tiling=TILINGS,
    seed=st.integers(0, 2**16),
)
def test_identity_prediction_is_reproduced_exactly(shape, channels, tiling, seed):
    tile, overlap = tiling
    image = np.random.default_rng(seed).random((*shape, channels), dtype=np.float32)
    result = _stitch(image, tile, overlap, lambda values, _: values)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, image)


@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (64, 32), (48, 8)])
def test_tile_dependent_bias_blends_without_a_step(tile, overlap):
    image = np.zeros((200, 170, 1), np.float32)
    biases = np.random.default_rng(3).uniform(-1, 1, 100)
    result = _stitch(image, tile, overlap, lambda values, index: values + biases[index])
    # A hard seam would jump by up to 2 between neighbours; a raised-cosine ramp over
    # `overlap` pixels changes by at most pi / (2 * overlap) per unit of bias difference.
    largest_step = max(np.abs(np.diff(result, axis=a)).max() for a in (0, 1))
    assert largest_step <= 2 * np.pi / (2 * overlap) + 1e-6


def test_stitcher_rejects_mismatched_tiles_and_gaps():
    stitcher = Stitcher((10, 10), 2)
    window = (slice(0, 5), slice(0, 5))
    with pytest.raises(ValueError, match="do not fit"):
        stitcher.add(window, np.zeros((5, 5, 1)), np.ones((5, 5)))
    with pytest.raises(ValueError, match="positive"):
        stitcher.add(window, np.zeros((5, 5, 2)), np.zeros((5, 5)))
    stitcher.add(window, np.zeros((5, 5, 2)), np.ones((5, 5)))
    with pytest.raises(ValueError, match="75 pixel"):
        stitcher.result()


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    channels=st.sampled_from([0, 1, 3]),
    multiple=st.integers(1, 16),
    minimum=st.integers(0, 50),
)
def test_pad_to_multiple_is_undone_by_its_crop(shape, channels, multiple, minimum):
    full_shape = shape if channels == 0 else (*shape, channels)
    image = np.random.default_rng(0).random(full_shape)
    padded, crop = pad_to_multiple(image, multiple, minimum)
    for size in padded.shape[:2]:
        assert size % multiple == 0
        assert size >= minimum
    assert padded.shape[2:] == image.shape[2:]
    np.testing.assert_array_equal(padded[crop], image)


def test_pad_to_multiple_reflects():
    padded, crop = pad_to_multiple(np.arange(6.0).reshape(2, 3), 4)
    assert padded.shape == (4, 4)
    np.testing.assert_array_equal(padded[:, 3], [4, 1, 4, 1])
    np.testing.assert_array_equal(padded[1], [0, 1, 2, 1])
    assert crop == (slice(1, 3), slice(0, 3))
