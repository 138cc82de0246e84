"""Patch sampling from sparse annotations, validation hold-out and class weights."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio.core.augment import make_augmenter
from napari_dlbio.core.errors import ConfigError, InputDataError
from napari_dlbio.core.patches import (
    PatchSampler,
    class_pixel_counts,
    class_weights_from_counts,
    hold_out,
    random_crops,
    split_validation,
    validation_mask,
)


def _scribbles(shape=(4, 120, 150)) -> np.ndarray:
    """A few thin strokes: background on slice 1, a rare class-2 dot on slice 3."""
    annotation = np.zeros(shape, np.uint8)
    annotation[1, 30, 10:60] = 1
    annotation[1, 80:100, 120] = 2
    annotation[3, 5, 140] = 3
    return annotation


def test_patches_from_sparse_scribbles_always_hold_annotated_pixels():
    annotation = _scribbles()
    images = np.random.default_rng(0).random((*annotation.shape, 2), dtype=np.float32)
    sampler = PatchSampler(images, annotation, 32, seed=1)
    seen = set()
    for _ in range(300):
        image, patch = sampler.sample()
        assert image.shape == (32, 32, 2)
        assert image.dtype == np.float32
        assert patch.shape == (32, 32)
        assert patch.dtype == np.uint8
        assert patch.any()
        seen.update(np.unique(patch[patch > 0]).tolist())
    assert seen == {1, 2, 3}
    assert sampler.annotation_values == [1, 2, 3]


def test_patch_image_and_annotation_come_from_the_same_place():
    annotation = _scribbles()
    # The image encodes each pixel's own coordinates, so a patch tells where it came from.
    z, y, x = np.indices(annotation.shape)
    images = np.stack([z, y, x], axis=-1).astype(np.float32)
    sampler = PatchSampler(images, annotation, 16, seed=2)
    for _ in range(100):
        image, patch = sampler.sample()
        zz, yy, xx = (image[..., i].astype(int) for i in range(3))
        np.testing.assert_array_equal(annotation[zz, yy, xx], patch)


def test_classes_are_sampled_roughly_balanced():
    annotation = np.zeros((1, 200, 200), np.uint8)
    annotation[0, :150] = 1  # 30,000 background pixels
    annotation[0, 190, 190] = 2  # one rare pixel
    sampler = PatchSampler(np.zeros((1, 200, 200, 1), np.float32), annotation, 8, seed=0)
    hits = sum(2 in sampler.sample()[1] for _ in range(400))
    assert 120 < hits < 280


def test_slices_smaller_than_the_patch_are_padded():
    annotation = np.ones((2, 10, 40), np.uint8)
    images = np.random.default_rng(0).random((2, 10, 40, 1), dtype=np.float32)
    sampler = PatchSampler(images, annotation, 32, seed=0)
    for _ in range(20):
        image, patch = sampler.sample()
        assert image.shape == (32, 32, 1)
        # Only the 10 real rows are annotated; the padding counts as not annotated.
        assert np.count_nonzero(patch.any(axis=1)) == 10
        assert np.isfinite(image).all()


def test_slices_restrict_sampling():
    annotation = np.ones((3, 20, 20), np.uint8)
    images = np.broadcast_to(np.arange(3.0)[:, None, None, None], (3, 20, 20, 1))
    sampler = PatchSampler(images, annotation, 8, slices=[2])
    assert all(sampler.sample()[0][0, 0, 0] == 2 for _ in range(20))
    with pytest.raises(InputDataError, match="no annotated pixel"):
        PatchSampler(images, np.zeros((3, 20, 20), np.uint8), 8)
    with pytest.raises(InputDataError, match=r"\[5\]"):
        PatchSampler(images, annotation, 8, slices=[5])


def test_centres_restrict_where_patches_sit_but_every_annotation_comes_along():
    annotation = np.ones((1, 64, 64), np.uint8)
    annotation[0, 56:64, 56:64] = 2
    centres = np.zeros(annotation.shape, bool)
    centres[0, 56:64, 56:64] = True
    images = np.zeros((1, 64, 64, 1), np.float32)
    sampler = PatchSampler(images, annotation, 16, centres=centres)
    for _ in range(20):
        _, labels = sampler.sample()
        assert (labels == 2).sum() >= 16  # centred in the corner square
        assert (labels == 1).any()  # the background around it is still annotated
    with pytest.raises(InputDataError, match="centre mask"):
        PatchSampler(images, annotation, 16, centres=centres[0])


def test_sampler_is_reproducible_and_augments():
    annotation = _scribbles()
    images = np.random.default_rng(0).random((*annotation.shape, 1), dtype=np.float32)
    augment = make_augmenter()
    first = PatchSampler(images, annotation, 32, seed=5, augment=augment).sample_batch(4)
    second = PatchSampler(images, annotation, 32, seed=5, augment=augment).sample_batch(4)
    assert first[0].shape == (4, 32, 32, 1)
    assert first[1].shape == (4, 32, 32)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_huge_annotations_keep_a_strided_subsample(monkeypatch):
    from napari_dlbio.core import patches

    monkeypatch.setattr(patches, "MAX_COORDINATES_PER_CLASS", 100)
    annotation = np.ones((3, 30, 30), np.uint8)
    annotation[2, 0, 0] = 2
    sampler = PatchSampler(np.zeros((3, 30, 30, 1), np.float32), annotation, 8)
    kept = sampler._coordinates
    assert len(kept[1]) <= 100
    assert len(kept[2]) == 1
    # The subsample still spans every slice.
    assert set((kept[1] // 900).tolist()) == {0, 1, 2}


def test_split_validation_by_slices():
    annotation = np.zeros((10, 4, 4), np.uint8)
    annotation[[0, 2, 3, 5, 7, 9], 0, 0] = 1
    train, validation = split_validation(annotation, 0.3, seed=0)
    assert len(validation) == 2
    assert sorted(train + validation) == [0, 2, 3, 5, 7, 9]
    assert split_validation(annotation, 0.3, seed=0) == (train, validation)
    # At least one validation slice, never all of them.
    assert len(split_validation(annotation, 0.01)[1]) == 1
    assert len(split_validation(annotation, 0.99)[0]) == 1
    assert split_validation(annotation, 0.0) == ([0, 2, 3, 5, 7, 9], [])


def test_single_annotated_slice_holds_out_a_band_of_rows():
    annotation = np.zeros((3, 100, 50), np.uint8)
    annotation[1, 10:90, 5:45] = 1
    annotation[1, 40:60, 20:30] = 2
    assert split_validation(annotation, 0.2) == ([1], [])
    mask = validation_mask(annotation, 0.2, seed=3)
    assert mask.dtype == bool
    assert not mask[[0, 2]].any()
    held = mask[1].sum() / (annotation[1] > 0).sum()
    assert held == pytest.approx(0.2, abs=0.03)
    rows = np.flatnonzero(mask[1].any(axis=1))
    assert np.all(np.diff(rows) == 1)  # one contiguous band
    assert not (mask & (annotation == 0)).any()
    train, validation = hold_out(annotation, mask)
    assert train.dtype == annotation.dtype
    np.testing.assert_array_equal(train + validation, annotation)
    assert not (train.astype(bool) & validation.astype(bool)).any()


def test_validation_mask_never_takes_everything():
    annotation = np.zeros((1, 20, 20), np.uint8)
    annotation[0, 5, :] = 1  # a single stroke along one row
    assert not validation_mask(annotation, 0.5).any()
    assert not validation_mask(annotation, 0.0).any()
    with pytest.raises(ConfigError):
        validation_mask(annotation, 1.0)
    with pytest.raises(InputDataError, match="paint"):
        split_validation(np.zeros((2, 3, 3), np.uint8), 0.5)


def test_class_counts_and_median_frequency_weights():
    annotation = np.array([[[0, 1, 1, 1, 1, 1, 1, 2, 2, 3]]], np.uint8)
    counts = class_pixel_counts(annotation, 4)
    np.testing.assert_array_equal(counts, [6, 2, 1, 0])
    weights = class_weights_from_counts(counts)
    # frequencies 6/9, 2/9, 1/9: median 2/9 -> weights 1/3, 1, 2; absent class -> 1
    np.testing.assert_allclose(weights, [1 / 3, 1, 2, 1], rtol=1e-6)
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(class_weights_from_counts(np.zeros(3)), [1, 1, 1])
    capped = class_weights_from_counts(np.array([10**6, 1]), max_weight=50)
    assert np.isfinite(capped).all()
    assert capped.max() == 50
    with pytest.raises(InputDataError, match="value 3"):
        class_pixel_counts(annotation, 2)


def test_random_crops_cover_the_whole_stack_and_pad_short_axes():
    images = np.arange(3 * 20 * 30, dtype=np.float32).reshape(3, 20, 30)
    crops = random_crops(images, 16, 200, np.random.default_rng(0))
    assert crops.shape == (200, 16, 16, 1)
    assert crops.dtype == np.float32
    # Crops come from every slice, annotated or not, and from both ends of each axis.
    slices = {int(crop[0, 0, 0]) // 600 for crop in crops}
    assert slices == {0, 1, 2}
    assert crops.min() == 0
    assert crops.max() == images.max()
    small = random_crops(images[:, :10, :10], 16, 2, np.random.default_rng(0))
    assert small.shape == (2, 16, 16, 1)
    # Reflection continues the image: row 10 mirrors row 8.
    np.testing.assert_array_equal(small[:, 10], small[:, 8])
