"""The test image of a bioimage.io package: the one given at export, or one that ships.

A package's test input is a real image that its test output is computed from.  Default, for
grey models section 0 of the ISBI 2012 EM training volume, for colour classifiers the first
PlantVillage photo that the classifier did not train on.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from napari_dlbio.core.class_dataset import image_fingerprints, to_input_image
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.io import list_class_folder, read_image, read_stack
from napari_dlbio.core.normalisation import as_stack, check_finite, fit_channels

_SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
_EM_SAMPLE = _SAMPLES / "isbi2012_train-volume_slices0-4.tif"
_EM_SOURCE = "section 0 of the ISBI 2012 training volume that ships with napari-dlbio"
_LEAF_SAMPLES = _SAMPLES / "plantvillage"
# Test tensors are cut to at most this side (a multiple of the size multiple): one network
# pass of a slice this large is what napari-dlbio predicts per tile by default.
_MAX_TEST_SIDE = 512


def segmentation_sample(
    sample: np.ndarray | None, channels: int, multiple: int
) -> tuple[np.ndarray, str]:
    """The first slice of the sample, (Y, X, C), centre-cut to a size the network takes,
    and what it is.

    Raises
    ------
    InputDataError
        No sample is given for a model of other than 1 channel, or it is too small or not
        finite.
    """
    source = "the centre of the sample image given at export"
    if sample is None:
        if channels != 1:
            raise _no_sample(channels)
        sample = read_stack(_EM_SAMPLE).data[:1]
        source = _EM_SOURCE
    stack, _ = as_stack(np.asarray(sample))
    image = np.asarray(fit_channels(stack[:1], channels)[0])
    check_finite(image, "sample image")
    sides = [min(_MAX_TEST_SIDE, side) // multiple * multiple for side in image.shape[:2]]
    if min(sides) < multiple:
        raise InputDataError(
            f"The sample image ({image.shape[0]} x {image.shape[1]}) is smaller than the "
            f"{multiple} x {multiple} pixels this model takes; pass a larger one."
        )
    top, left = ((side - cut) // 2 for side, cut in zip(image.shape[:2], sides, strict=True))
    return image[top : top + sides[0], left : left + sides[1]], source


def classifier_sample(
    sample: np.ndarray | None, channels: int, input_size: int, trained: Collection[str]
) -> tuple[np.ndarray, str]:
    """The sample photo, the one given or the first shipped photo whose fingerprint is not
    among ``trained`` (the classifier's training images), and what it is.

    Raises
    ------
    InputDataError
        No sample is given for a model of other than 1 or 3 channels.
    """
    if sample is not None:
        image = np.asarray(sample)
        if image.ndim == 4 or (image.ndim == 3 and image.shape[-1] not in (1, 2, 3, 4)):
            image = image[0]
        return image, "the sample image given at export"
    if channels == 1:
        return read_stack(_EM_SAMPLE).data[0], _EM_SOURCE
    if channels != 3:
        raise _no_sample(channels)
    photos = list_class_folder(_LEAF_SAMPLES).paths
    for path in photos:
        photo = read_image(path)
        seen = to_input_image(photo, input_size, channels)
        if image_fingerprints([seen])[0] not in trained:
            return photo, f"PlantVillage photo {_photo_name(path)}, not one of its training images"
    return read_image(photos[0]), f"PlantVillage photo {_photo_name(photos[0])}"


def _no_sample(channels: int) -> InputDataError:
    return InputDataError(
        f"This model reads images with {channels} channels; napari-dlbio ships no such "
        "sample. Pass a sample image of your data."
    )


def _photo_name(path: Path) -> str:
    return f"`{path.parent.name}/{path.name}` (ships with napari-dlbio)"
