from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.measure import label

from napari_dlbio.core.errors import ConfigError, InputDataError
from napari_dlbio.core.objects import (
    BOUNDARY,
    OBJECT,
    ObjectSettings,
    cells_from_boundary,
    fill_boundaries,
    instances,
    next_first_label,
    objects_from_mask,
)

SETTINGS = ObjectSettings()


def _two_rooms(height: int = 40, width: int = 64) -> np.ndarray:
    """Boundary probability: a 3-px membrane line splitting the image into two halves."""
    probability = np.zeros((height, width), np.float32)
    probability[:, 30:33] = 1.0
    return probability


def _disks(centres: list[tuple[int, int]], radius: float, shape=(80, 160)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.any([(yy - y) ** 2 + (xx - x) ** 2 <= radius**2 for y, x in centres], axis=0)


def _matches(truth: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int]:
    """Objects of one slice matched one to one at IoU > 0.5 (such a match is unique)."""
    truth = truth.astype(np.int64)
    predicted = predicted.astype(np.int64)
    both = (truth > 0) & (predicted > 0)
    pairs, overlap = np.unique(
        truth[both] * (predicted.max() + 1) + predicted[both], return_counts=True
    )
    t, p = np.divmod(pairs, predicted.max() + 1)
    iou = overlap / (np.bincount(truth.ravel())[t] + np.bincount(predicted.ravel())[p] - overlap)
    n_truth = np.unique(truth[truth > 0]).size
    n_predicted = np.unique(predicted[predicted > 0]).size
    return int((iou > 0.5).sum()), n_truth, n_predicted


def test_a_membrane_line_gives_two_cells_that_exclude_the_membrane() -> None:
    probability = _two_rooms()
    cells = cells_from_boundary(probability, SETTINGS)

    assert cells.dtype == np.uint32
    assert set(np.unique(cells)) == {0, 1, 2}
    assert (cells[:, 30:33] == 0).all()
    assert len(np.unique(cells[:, :30])) == 1
    assert len(np.unique(cells[:, 33:])) == 1
    assert cells[0, 0] != cells[0, -1]


def test_a_faint_gap_in_a_membrane_does_not_merge_two_cells() -> None:
    probability = _two_rooms()
    probability[15:20, 30:33] = 0.4  # the network was unsure here: below 0.5, a bridge
    assert label(probability < 0.5).max() == 1

    cells = cells_from_boundary(probability, SETTINGS)
    assert cells.max() == 2
    assert cells[17, 0] != cells[17, -1]
    # A seed threshold above the gap joins both halves into one seed, one cell.
    merged = cells_from_boundary(probability, ObjectSettings(smoothing=0, seed_threshold=0.45))
    assert merged.max() == 1


def test_a_small_cell_without_a_seed_is_kept_and_specks_are_dropped() -> None:
    probability = np.ones((40, 40), np.float32)
    probability[5:35, 5:19] = 0.0  # a large cell
    probability[12:19, 26:33] = 0.0  # 49 px: too small for a seed once smoothed
    probability[30:34, 30:34] = 0.0  # 16 px speck inside the membrane

    cells = cells_from_boundary(probability, SETTINGS)
    assert cells.max() == 2
    assert (cells[12:19, 26:33] > 0).all()
    assert (cells[30:34, 30:34] == 0).all()


def test_cells_per_slice_have_labels_unique_across_the_stack() -> None:
    stack = np.stack([_two_rooms()] * 3)
    cells = cells_from_boundary(stack, SETTINGS)

    assert cells.max() == 6
    for z in range(3):
        assert set(np.unique(cells[z])) == {0, 2 * z + 1, 2 * z + 2}


def test_streaming_slice_by_slice_gives_the_labels_of_the_whole_stack() -> None:
    stack = np.stack([_two_rooms(), np.ones((40, 64), np.float32), _two_rooms()])
    whole = cells_from_boundary(stack, SETTINGS, first_label=10)

    first = 10
    for z, plane in enumerate(stack):
        part = cells_from_boundary(plane, SETTINGS, first_label=first)
        np.testing.assert_array_equal(part, whole[z])
        first = next_first_label(part, first)
    assert first == 14  # 2 + 0 + 2 cells from 10


def test_through_the_stack_a_cell_is_one_label_across_slices() -> None:
    stack = np.stack([_two_rooms()] * 3)
    cells = cells_from_boundary(stack, ObjectSettings(through_stack=True))

    assert cells.max() == 2
    assert (cells[:, 0, 0] == cells[0, 0, 0]).all()
    assert (cells[:, 0, -1] == cells[0, 0, -1]).all()


def test_smoothing_does_not_blur_across_slices_of_the_stack() -> None:
    # Slice 1 has a membrane line; with smoothing along z the others would inherit it.
    stack = np.zeros((3, 40, 64), np.float32)
    stack[1] = _two_rooms()
    cells = cells_from_boundary(stack, ObjectSettings(smoothing=3, through_stack=True))
    assert cells.max() == 1
    assert (cells[[0, 2]] == 1).all()


def test_two_touching_disks_are_split_into_two_objects() -> None:
    mask = _disks([(40, 70), (40, 116)], radius=24)  # a neck 13 px wide
    assert label(mask).max() == 1

    objects = objects_from_mask(mask, SETTINGS)
    assert objects.max() == 2
    assert objects[40, 70] != objects[40, 116]
    assert (objects[mask] > 0).all()
    assert abs(np.sum(objects == 1) - np.sum(objects == 2)) < 0.05 * mask.sum()


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(_disks([(40, 50), (40, 80)], radius=20), id="overlapping-blobs"),
        pytest.param(
            ((np.mgrid[:80, :160][0] - 40) / 12.0) ** 2
            + ((np.mgrid[:80, :160][1] - 80) / 70.0) ** 2
            <= 1,
            id="long-ellipse",
        ),
        pytest.param(
            _disks([(40, 0)], radius=30),  # a disk cut by the image border
            id="cut-by-border",
        ),
    ],
)
def test_an_object_without_a_narrow_neck_is_not_split(mask: np.ndarray) -> None:
    objects = objects_from_mask(mask, SETTINGS)
    assert objects.max() == 1
    np.testing.assert_array_equal(objects > 0, mask)


def test_a_bent_elongated_object_stays_whole() -> None:
    yy, xx = np.mgrid[:120, :120]
    radius = np.hypot(yy - 120, xx)
    banana = (radius > 60) & (radius < 80)  # a quarter ring 20 px thick
    assert objects_from_mask(banana, SETTINGS).max() == 1


def test_objects_per_slice_are_unique_through_the_stack_joins_them() -> None:
    mask = np.stack([_disks([(40, 50)], radius=15)] * 3)
    mask[1, :, 120:] = True  # a second object in slice 1 only

    per_slice = objects_from_mask(mask, SETTINGS, first_label=5)
    assert [sorted(np.unique(p[p > 0])) for p in per_slice] == [[5], [6, 7], [8]]
    through = objects_from_mask(mask, ObjectSettings(through_stack=True))
    assert through.max() == 2
    assert (through[:, 40, 50] == through[0, 40, 50]).all()


def test_specks_of_the_mask_are_not_objects() -> None:
    mask = _disks([(40, 50)], radius=15)
    mask[5:10, 120:130] = True  # 50 px
    objects = objects_from_mask(mask, SETTINGS)
    assert objects.max() == 1
    assert (objects[5:10, 120:130] == 0).all()


def test_fill_boundaries_covers_every_pixel_and_keeps_the_objects() -> None:
    cells = cells_from_boundary(np.stack([_two_rooms()] * 2), SETTINGS)
    filled = fill_boundaries(cells)

    assert (filled > 0).all()
    np.testing.assert_array_equal(filled[cells > 0], cells[cells > 0])
    assert set(np.unique(filled[1])) == {3, 4}  # slice by slice: no label from slice 0
    assert (fill_boundaries(np.zeros((4, 4), np.uint32)) == 0).all()


def test_instances_cut_each_class_by_its_role() -> None:
    probability = _two_rooms(80, 160)
    mitochondria = _disks([(40, 70), (40, 116)], radius=24)
    probabilities = np.zeros((80, 160, 3), np.float32)
    probabilities[..., 1] = probability
    probabilities[..., 2] = np.where(mitochondria, 0.6, 0.0)
    probabilities[..., 0] = 1 - probabilities[..., 1:].sum(axis=-1)

    result = instances(probabilities, {1: BOUNDARY, 2: OBJECT}, SETTINGS)
    assert sorted(result) == [1, 2]
    assert result[1].max() == 2
    assert result[2].max() == 2  # the two touching disks, split


def test_instances_reject_unknown_roles_and_classes() -> None:
    probabilities = np.full((8, 8, 2), 0.5, np.float32)
    with pytest.raises(ConfigError, match="'boundary' or 'object'"):
        instances(probabilities, {1: "membrane"}, SETTINGS)
    with pytest.raises(InputDataError, match="classes 1 to 1"):
        instances(probabilities, {2: OBJECT}, SETTINGS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"smoothing": -1.0}, "Smoothing must be a number of pixels, 0 or more"),
        ({"smoothing": float("nan")}, "Smoothing must be"),
        ({"seed_threshold": 0.0}, "seed threshold must be a probability between 0 and 1"),
        ({"seed_threshold": 1.0}, "seed threshold must be"),
    ],
)
def test_settings_reject_impossible_values_with_a_plain_message(
    changes: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ObjectSettings(**changes)


def test_settings_round_trip_through_json_and_refuse_unknown_keys() -> None:
    settings = ObjectSettings(smoothing=1.5, seed_threshold=0.3, through_stack=True)
    assert ObjectSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ConfigError, match="Unknown ObjectSettings setting"):
        ObjectSettings.from_dict({"sigma": 2})


def test_inputs_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(InputDataError, match=r"\(Y, X\) or \(Z, Y, X\)"):
        cells_from_boundary(np.zeros(5), SETTINGS)
    with pytest.raises(InputDataError, match="first label"):
        objects_from_mask(np.zeros((5, 5), bool), SETTINGS, first_label=0)


def test_cells_of_isbi_are_recovered_from_a_blurred_membrane(isbi_dir: Path) -> None:
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[:2]
    truth = np.stack([label(plane == 255, connectivity=1) for plane in labels])
    probability = np.stack([ndi.gaussian_filter((p == 0).astype(np.float32), 1) for p in labels])

    cells = cells_from_boundary(probability, SETTINGS)
    matched, n_truth, n_predicted = np.sum(
        [_matches(*pair) for pair in zip(truth, cells, strict=True)], 0
    )
    assert 2 * matched / (n_truth + n_predicted) >= 0.95


def test_no_isbi_mitochondrion_is_split(structures_dir: Path) -> None:
    # Slices 9, 11 and 22 hold the mitochondria that a looser neck rule cuts in two.
    masks = tifffile.imread(structures_dir / "mitochondria.tif")[[9, 11, 22]] == 255
    objects = objects_from_mask(masks, SETTINGS)
    for mask, plane in zip(masks, objects, strict=True):
        regions = label(mask, connectivity=1)
        large = np.bincount(regions.ravel())[1:] >= 200
        assert len(np.unique(plane[plane > 0])) == large.sum()
