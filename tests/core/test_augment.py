"""Augmentation keeps image and annotation aligned."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio.core.augment import augment_pair, make_augmenter
from napari_dlbio.core.errors import ConfigError


def _blobs(shape=(64, 64), seed=0) -> np.ndarray:
    """An annotation of large blocks (0 = not annotated, 1..3) so edges are few."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, (shape[0] // 8, shape[1] // 8), dtype=np.uint8)
    return np.kron(coarse, np.ones((8, 8), np.uint8))


@pytest.mark.parametrize("shape", [(64, 64), (48, 64)])
def test_flips_and_rotations_move_image_and_annotation_together(shape):
    annotation = _blobs(shape)
    image = annotation[..., np.newaxis].astype(np.float32)
    augment = make_augmenter(elastic=False, intensity=False)
    rng = np.random.default_rng(1)
    outputs = set()
    for _ in range(40):
        out_image, out_annotation = augment(image, annotation, rng)
        assert out_image.shape == image.shape
        assert out_annotation.shape == annotation.shape
        np.testing.assert_array_equal(out_image[..., 0], out_annotation)
        outputs.add(out_annotation.tobytes())
    # Square patches reach all 8 flip/rotation variants, others the 4 without quarter turns.
    assert len(outputs) == (8 if shape[0] == shape[1] else 4)


def test_elastic_deformation_keeps_alignment():
    annotation = _blobs((96, 96))
    image = np.repeat(annotation[..., np.newaxis], 2, axis=-1).astype(np.float32)
    rng = np.random.default_rng(2)
    changed = 0
    for _ in range(10):
        out_image, out_annotation = augment_pair(
            image,
            annotation,
            rng,
            flips=False,
            rotations=False,
            intensity=False,
            elastic_alpha=300.0,
            elastic_sigma=8.0,
            elastic_probability=1.0,
        )
        changed += not np.array_equal(out_annotation, annotation)
        # Labels stay labels (nearest neighbour), including 0 = not annotated.
        assert set(np.unique(out_annotation)) <= {0, 1, 2, 3}
        # Away from block edges the interpolated image equals the resampled labels.
        agree = np.rint(out_image[..., 0]) == out_annotation
        assert agree.mean() > 0.95
        np.testing.assert_array_equal(out_image[..., 0], out_image[..., 1])
    assert changed == 10


def test_elastic_with_zero_alpha_changes_nothing():
    annotation = _blobs()
    image = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    out_image, out_annotation = augment_pair(
        image,
        annotation,
        np.random.default_rng(0),
        flips=False,
        rotations=False,
        intensity=False,
        elastic_alpha=0.0,
        elastic_probability=1.0,
    )
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_annotation, annotation)


def test_intensity_jitter_touches_the_image_only():
    annotation = _blobs()
    image = np.random.default_rng(0).random((64, 64, 1), dtype=np.float32)
    out_image, out_annotation = augment_pair(
        image,
        annotation,
        np.random.default_rng(4),
        flips=False,
        rotations=False,
        elastic=False,
        brightness=0.1,
        contrast=0.2,
    )
    np.testing.assert_array_equal(out_annotation, annotation)
    assert not np.array_equal(out_image, image)
    # An affine change: still perfectly correlated with the input.
    assert np.corrcoef(out_image.ravel(), image.ravel())[0, 1] == pytest.approx(1.0)
    assert abs(out_image.mean() - image.mean()) <= 0.1 + 1e-6


def test_outputs_are_contiguous_typed_and_leave_inputs_alone():
    annotation = _blobs()
    image = np.random.default_rng(0).random((64, 64, 1)).astype(np.float64)
    before = image.copy()
    out_image, out_annotation = augment_pair(image, annotation, np.random.default_rng(5))
    assert out_image.dtype == np.float32
    assert out_annotation.dtype == np.uint8
    assert out_image.flags.c_contiguous
    assert out_annotation.flags.c_contiguous
    np.testing.assert_array_equal(image, before)


def test_make_augmenter_rejects_unknown_options():
    with pytest.raises(ConfigError, match="flip"):
        make_augmenter(flip=True)


def test_scale_augmentation_shows_structures_at_other_sizes_and_keeps_alignment():
    """A centred square grows and shrinks with the zoom, image and annotation alike."""
    annotation = np.ones((64, 64), np.uint8)
    annotation[24:40, 24:40] = 2  # 256 pixels
    image = (annotation[..., np.newaxis] == 2).astype(np.float32)
    augment = make_augmenter(
        flips=False, rotations=False, elastic=False, intensity=False, scale=0.5
    )
    rng = np.random.default_rng(3)
    areas = []
    for _ in range(30):
        out_image, out_annotation = augment(image, annotation, rng)
        structure = out_annotation == 2
        assert np.mean((out_image[..., 0] > 0.5) == structure) > 0.98
        areas.append(int(structure.sum()))
    # Zoom factors between 1/1.5 and 1.5 change the area by up to 2.25 times either way.
    assert min(areas) < 200 < 320 < max(areas)
    assert min(areas) >= 256 / 2.25 - 40
    assert max(areas) <= 256 * 2.25 + 60


def test_no_scale_augmentation_draws_nothing_more():
    """Scale 0 leaves the random stream as it was: old seeds give the same patches."""
    annotation = _blobs((64, 64))
    image = annotation[..., np.newaxis].astype(np.float32)
    results = [
        augment_pair(image, annotation, np.random.default_rng(5), **options)
        for options in ({}, {"scale": 0.0})
    ]
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
