import numpy as np

from napari_dlbio.core.masks import drop_small_regions, mask_from_probabilities


def _probabilities(mask: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[mask] * 0.8 + 0.2 / n_classes


def test_the_mask_is_the_most_probable_class() -> None:
    mask = np.array([[0, 1, 2], [2, 2, 0]])
    np.testing.assert_array_equal(mask_from_probabilities(_probabilities(mask, 3)), mask)


def test_specks_smaller_than_the_size_become_background_and_larger_regions_stay() -> None:
    mask = np.zeros((2, 8, 8), np.uint8)
    mask[0, 0, :5] = 1  # a line of 5 pixels: kept
    mask[0, 6, 6] = 1  # a speck of 1 pixel
    mask[0, 4, 0:3] = 2  # 3 pixels of another class
    mask[1, 2:4, 2:4] = 1  # 4 pixels on the next slice
    cleaned = mask_from_probabilities(_probabilities(mask, 3), min_region_pixels=4)

    expected = mask.copy()
    expected[0, 6, 6] = 0
    expected[0, 4, 0:3] = 0
    np.testing.assert_array_equal(cleaned, expected)


def test_regions_are_four_connected_and_counted_per_slice() -> None:
    diagonal = np.eye(4, dtype=np.uint8)[np.newaxis]  # 4 pixels touching only at corners
    assert drop_small_regions(diagonal, 2).sum() == 0
    stack = np.ones((3, 1, 2), np.uint8)  # 2 pixels per slice, 6 in the stack
    assert drop_small_regions(stack, 3).sum() == 0


def test_size_zero_keeps_everything_and_the_input_is_not_changed() -> None:
    mask = np.zeros((5, 5), np.uint8)
    mask[2, 2] = 1
    assert drop_small_regions(mask, 0) is mask
    cleaned = drop_small_regions(mask, 2)
    assert cleaned.sum() == 0
    assert mask[2, 2] == 1
