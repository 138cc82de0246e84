"""One pixel conversion for every path: the napari reader's stack and ``dlbio`` agree exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_dlbio._reader import read_class_folder
from napari_dlbio.core.class_dataset import load_class_folder, load_images, to_input_images
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.io import reread_resized_photos
from napari_dlbio.core.photo import convert_photo, resize_to, to_channels, to_uint8

Maker = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]

# Every pixel type a photo folder may hold, with the file format that can store it.
KINDS: dict[str, tuple[str, Maker]] = {
    "uint8 RGB": ("png", lambda rng, s: rng.integers(0, 256, (*s, 3), dtype=np.uint8)),
    "uint16 grey": ("png", lambda rng, s: rng.integers(0, 65536, s, dtype=np.uint16)),
    "uint16 RGB": ("tif", lambda rng, s: rng.integers(0, 65536, (*s, 3), dtype=np.uint16)),
    "int32": ("tif", lambda rng, s: rng.integers(-500, 4000, s, dtype=np.int32)),
    "float in [0, 1]": ("tif", lambda rng, s: rng.random((*s, 3), dtype=np.float32)),
    "float above 1": ("tif", lambda rng, s: rng.random(s, dtype=np.float32) * 1000),
    "bool": ("tif", lambda rng, s: rng.random(s) > 0.5),
    "grey + alpha": ("png", lambda rng, s: rng.integers(0, 256, (*s, 2), dtype=np.uint8)),
    "RGBA": ("png", lambda rng, s: rng.integers(0, 256, (*s, 4), dtype=np.uint8)),
    "dark RGB": ("png", lambda rng, s: rng.integers(0, 2, (*s, 3), dtype=np.uint8)),
}


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        iio.imwrite(path, image)
    else:
        colour = image.ndim == 3 and image.shape[-1] in (3, 4)
        tifffile.imwrite(path, image, photometric="rgb" if colour else "minisblack")


def _folder(root: Path, photos: dict[str, list[tuple[str, tuple[int, int]]]]) -> Path:
    """Class sub-folders of random photos: ``{class: [(kind, (height, width)), ...]}``."""
    rng = np.random.default_rng(7)
    for name, files in photos.items():
        for i, (kind, shape) in enumerate(files):
            suffix, make = KINDS[kind]
            _write(root / name / f"{i} {kind}.{suffix}", make(rng, shape))
    return root


def _napari_input(root: Path, size: int, channels: int) -> tuple[np.ndarray, list[str]]:
    """What a classifier trained or run in napari receives: reader layer -> worker side."""
    ((data, kwargs, _),) = read_class_folder(str(root))
    metadata = kwargs["metadata"]
    photos = reread_resized_photos(data, metadata)
    return to_input_images(photos, size, channels), metadata["paths"]


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("kind", list(KINDS))
def test_napari_and_cli_give_the_classifier_identical_pixels(
    tmp_path: Path, kind: str, channels: int
) -> None:
    root = _folder(
        tmp_path / "leaves", {"a": [(kind, (24, 32))] * 2, "b": [("uint8 RGB", (24, 32))]}
    )

    from_napari, napari_paths = _napari_input(root, 16, channels)
    dataset = load_class_folder(root, 16, channels)
    images, kept, _ = load_images(dataset.paths, 16, channels)

    assert napari_paths == [str(path) for path in dataset.paths] == [str(p) for p in kept]
    np.testing.assert_array_equal(from_napari, dataset.images)
    np.testing.assert_array_equal(from_napari, images)


@pytest.mark.parametrize("channels", [3, 1])
def test_a_mixed_size_folder_reaches_the_classifier_resized_once(
    tmp_path: Path, channels: int
) -> None:
    common = (24, 32)
    root = _folder(
        tmp_path / "leaves",
        {
            "a": [(kind, common) for kind in KINDS] + [("uint16 RGB", (40, 50))],
            "b": [("uint8 RGB", common)] * 3 + [("float above 1", (17, 20))],
            # At least four times the input size on both sides: block-averaged first.
            "c": [("RGBA", common), ("uint8 RGB", (140, 130))],
        },
    )

    from_napari, napari_paths = _napari_input(root, 16, channels)
    dataset = load_class_folder(root, 16, channels)

    assert read_class_folder(str(root))[0][0].shape[1:3] == common
    assert napari_paths == [str(path) for path in dataset.paths]
    np.testing.assert_array_equal(from_napari, dataset.images)


def test_photos_that_kept_their_size_are_not_read_again(tmp_path: Path) -> None:
    root = _folder(tmp_path / "leaves", {"a": [("uint8 RGB", (8, 8))], "b": [("RGBA", (8, 8))]})
    ((data, kwargs, _),) = read_class_folder(str(root))

    assert reread_resized_photos(data, kwargs["metadata"]) is data
    assert reread_resized_photos(data, {}) is data


def test_a_part_of_the_stack_gets_its_own_originals(tmp_path: Path) -> None:
    root = _folder(
        tmp_path / "leaves",
        {"a": [("uint8 RGB", (8, 8)), ("uint8 RGB", (8, 8))], "b": [("uint8 RGB", (12, 6))]},
    )
    ((data, kwargs, _),) = read_class_folder(str(root))

    (photo,) = reread_resized_photos(data[2:], kwargs["metadata"], first=2)

    assert photo.shape == (12, 6, 3)
    np.testing.assert_array_equal(photo, iio.imread(root / "b" / "0 uint8 RGB.png"))


def test_a_resized_photo_that_vanished_or_changed_is_reported(tmp_path: Path) -> None:
    root = _folder(
        tmp_path / "leaves",
        {"a": [("uint8 RGB", (8, 8)), ("uint8 RGB", (8, 8))], "b": [("uint8 RGB", (12, 6))]},
    )
    ((data, kwargs, _),) = read_class_folder(str(root))
    odd = root / "b" / "0 uint8 RGB.png"

    iio.imwrite(odd, np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(InputDataError, match="has changed since its folder was opened"):
        reread_resized_photos(data, kwargs["metadata"])
    odd.unlink()
    with pytest.raises(InputDataError, match="reopen the folder"):
        reread_resized_photos(data, kwargs["metadata"])


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([0, 100, 500, 1000], np.float32, [0, 26, 128, 255]),
        ([0.0, 0.5, 1.0], np.float64, [0, 128, 255]),
        ([-0.5, 0.2, 0.8], np.float32, [0, 51, 204]),
        ([0, 257, 32768, 65535], np.uint16, [0, 1, 128, 255]),
        ([False, True], np.bool_, [0, 255]),
        ([-40, 0, 100, 200], np.int32, [0, 0, 100, 200]),
        ([-40, 0, 255, 510], np.int32, [0, 0, 128, 255]),
        ([0, 1, 254, 255], np.uint8, [0, 1, 254, 255]),
    ],
)
def test_the_uint8_rule(values: list, dtype: type, expected: list[int]) -> None:
    converted = to_uint8(np.array(values, dtype=dtype))

    assert converted.dtype == np.uint8
    assert converted.tolist() == expected


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused(bad: float) -> None:
    with pytest.raises(InputDataError, match="NaN or infinite"):
        to_uint8(np.array([[0.0, bad]], np.float32))


def test_non_numeric_pixels_are_refused() -> None:
    with pytest.raises(InputDataError, match="integer or floating-point"):
        to_uint8(np.array([["a", "b"]]))


def test_channels() -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgba = np.dstack([grey, grey // 2, grey // 4, np.full_like(grey, 9)])

    assert to_channels(grey, 3).shape == (16, 16, 3)
    np.testing.assert_array_equal(to_channels(np.dstack([grey, grey * 0]), 1)[..., 0], grey)
    np.testing.assert_array_equal(to_channels(rgba, 3), rgba[..., :3])
    # Grey shown as RGB (as the napari reader shows it) comes back to the very same grey.
    np.testing.assert_array_equal(to_channels(to_channels(grey, 3), 1)[..., 0], grey)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert to_channels(red, 1).tolist() == [[[54]]]  # rint(0.2125 * 255)


def test_a_dark_image_stays_dark_in_grey() -> None:
    dark = np.ones((4, 4, 3), np.uint8)

    assert np.all(convert_photo(dark, 1) == 1)


def test_resize_keeps_uint8_and_averages_large_photos() -> None:
    board = (np.indices((400, 600)).sum(axis=0) % 2 * 255).astype(np.uint8)[..., None]

    small = resize_to(board, (20, 30))

    assert small.shape == (20, 30, 1)
    assert small.dtype == np.uint8
    assert abs(float(small.mean()) - 127.5) < 2
