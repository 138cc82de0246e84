"""TIFFs whose only page stores 3 or 4 planes as colour samples: slices saved by mistake?

``tifffile.imwrite(path, stack)`` of a ``(3, Y, X)`` or ``(4, Y, X)`` array stores one RGB(A)
page with its colour samples plane after plane (planar configuration), unless told
``photometric='minisblack'``.  The tests write such files explicitly, as that default does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.io import read_image, read_label_stack, read_stack


def planar(path: Path, data: np.ndarray) -> Path:
    """Write ``data`` (planes first) the way tifffile's defaults store 3 or 4 planes."""
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate")
    return path


@pytest.mark.parametrize("planes", [3, 4])
def test_planar_planes_read_as_one_colour_image_with_a_note(tmp_path: Path, planes: int) -> None:
    data = np.arange(planes * 6 * 5, dtype=np.uint16).reshape(planes, 6, 5)
    path = planar(tmp_path / "stack.tif", data)

    stack = read_stack(path)

    assert stack.axes == "ZYXC"
    np.testing.assert_array_equal(stack.data[0], np.moveaxis(data, 0, -1))
    assert stack.colour_planes == planes
    (note,) = stack.notes
    assert f"stores its {planes} planes as the colour samples of one image" in note
    assert f"save them as {planes} slices" in note
    assert "photometric='minisblack'" in note
    assert "Fiji" in note


def test_a_planar_rgb_photo_is_still_an_rgb_image(tmp_path: Path) -> None:
    photo = np.random.default_rng(0).integers(0, 256, (3, 20, 30), dtype=np.uint8)
    path = planar(tmp_path / "photo.tif", photo)

    np.testing.assert_array_equal(read_image(path), np.moveaxis(photo, 0, -1))


@pytest.mark.parametrize("planes", [3, 4])
def test_planar_label_planes_are_slices(tmp_path: Path, planes: int) -> None:
    labels = np.random.default_rng(1).integers(0, 3, (planes, 8, 9), dtype=np.uint8)
    path = planar(tmp_path / "labels.tif", labels)

    stack = read_label_stack(path)

    assert stack.axes == "ZYX"
    np.testing.assert_array_equal(stack.data, labels)
    (note,) = stack.notes
    assert f"labels are never colour, so they are read as {planes} slices" in note
    assert "photometric='minisblack'" in note


def test_labels_saved_as_slices_have_no_note(tmp_path: Path) -> None:
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 9), np.uint8), photometric="minisblack")

    stack = read_label_stack(path)

    assert stack.data.shape == (3, 8, 9)
    assert stack.notes == ()
    assert stack.colour_planes == 0


def test_interleaved_colour_is_not_mistaken_for_slices(tmp_path: Path) -> None:
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((8, 9, 3), np.uint8), photometric="rgb")

    assert read_stack(path).notes == ()
    with pytest.raises(InputDataError, match="labels must be single-channel"):
        read_label_stack(path)


def test_a_planar_colour_stack_of_several_pages_is_colour(tmp_path: Path) -> None:
    path = planar(tmp_path / "movie.tif", np.zeros((2, 3, 8, 9), np.uint8))

    stack = read_stack(path)

    assert stack.data.shape == (2, 8, 9, 3)
    assert stack.notes == ()
    with pytest.raises(InputDataError, match="labels must be single-channel"):
        read_label_stack(path)
