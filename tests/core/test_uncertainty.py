"""Uncertainty maps and the region a user should check next."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.uncertainty import entropy_map, most_uncertain_region


def test_entropy_is_zero_when_certain_and_one_when_undecided():
    certain = np.array([[1.0, 0.0, 0.0]], np.float32)
    undecided = np.full((1, 3), 1 / 3, np.float32)
    assert entropy_map(certain)[0] == pytest.approx(0.0, abs=1e-5)
    assert entropy_map(undecided)[0] == pytest.approx(1.0, abs=1e-5)


def test_the_most_uncertain_square_is_found_on_its_slice():
    uncertainty = np.zeros((4, 256, 384), np.float32)
    uncertainty[2, 128:256, 256:384] = 0.9
    uncertainty[1, 0:10, 0:10] = 1.0  # a tiny hot spot weighs less than a whole square
    assert most_uncertain_region(uncertainty, window=128) == (2, 192, 320)


def test_a_slice_smaller_than_the_window_is_one_square():
    uncertainty = np.zeros((40, 50), np.float32)
    uncertainty[5, 5] = 1.0
    assert most_uncertain_region(uncertainty, window=128) == (0, 20, 25)


@pytest.mark.parametrize("bad", [np.zeros((0, 4, 4)), np.zeros((2, 2, 2, 2)), np.zeros(5)])
def test_maps_that_are_not_slices_are_refused(bad):
    with pytest.raises(InputDataError, match="uncertainty map"):
        most_uncertain_region(bad)
