"""Reading stacks, images and class folders; bad input gives messages naming the file."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_dlbio.core import io
from napari_dlbio.core.errors import InputDataError


def _png(path: Path, value: int, shape: tuple[int, ...] = (8, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.full(shape, value, np.uint8), extension=".png")
    return path


def _jpg(path: Path, shape: tuple[int, ...] = (16, 16, 3), value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.full(shape, value, np.uint8), extension=".jpg")
    return path


def test_slice_folder_is_sorted_naturally(tmp_path: Path) -> None:
    for number in (10, 2, 1, 21):
        _png(tmp_path / f"slice {number}.png", number)

    stack = io.read_stack(tmp_path)

    assert stack.names == ("slice 1.png", "slice 2.png", "slice 10.png", "slice 21.png")
    assert stack.data[:, 0, 0].tolist() == [1, 2, 10, 21]
    assert stack.axes == "ZYX"
    assert stack.data.shape == (4, 8, 12)


def test_slice_folder_ignores_other_files(tmp_path: Path) -> None:
    _png(tmp_path / "0.png", 5)
    tifffile.imwrite(tmp_path / "1.tif", np.full((8, 12), 6, np.uint8))
    (tmp_path / "notes.txt").write_text("acquired on monday")
    (tmp_path / ".hidden.png").write_bytes(b"not an image")

    stack = io.read_stack(tmp_path)

    assert stack.names == ("0.png", "1.tif")
    assert stack.data[:, 0, 0].tolist() == [5, 6]


@pytest.mark.parametrize(
    ("dtype", "shape", "axes"),
    [
        (np.uint8, (3, 10, 11), "ZYX"),
        (np.uint16, (3, 10, 11), "ZYX"),
        (np.float32, (3, 10, 11), "ZYX"),
        (np.uint8, (3, 10, 11, 3), "ZYXC"),
        (np.uint16, (10, 11), "ZYX"),
    ],
)
def test_tiff_stack_keeps_dtype_and_values(tmp_path: Path, dtype: type, shape, axes) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 200).astype(dtype)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, photometric="rgb" if shape[-1] == 3 else "minisblack")

    stack = io.read_stack(path)

    assert stack.axes == axes
    assert stack.data.dtype == dtype
    expected = data if len(shape) > 2 else data[np.newaxis]
    np.testing.assert_array_equal(stack.data, expected)
    assert stack.source == path
    assert stack.names == ()


def test_imagej_channels_become_the_last_axis(tmp_path: Path) -> None:
    data = np.arange(3 * 2 * 5 * 6, dtype=np.uint16).reshape(3, 2, 5, 6)
    path = tmp_path / "hyperstack.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"})

    stack = io.read_stack(path)

    assert stack.axes == "ZYXC"
    np.testing.assert_array_equal(stack.data, np.moveaxis(data, 1, -1))


def test_single_png_is_a_stack_of_one(tmp_path: Path) -> None:
    stack = io.read_stack(_png(tmp_path / "one.png", 7))
    assert stack.data.shape == (1, 8, 12)


def test_big_uncompressed_tiff_is_memory_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = np.arange(4 * 32 * 32, dtype=np.uint16).reshape(4, 32, 32)
    plain, packed = tmp_path / "plain.tif", tmp_path / "packed.tif"
    tifffile.imwrite(plain, data, photometric="minisblack")
    tifffile.imwrite(packed, data, photometric="minisblack", compression="zlib")
    monkeypatch.setattr(io, "MEMMAP_THRESHOLD_BYTES", 0)

    mapped = io.read_stack(plain).data
    read = io.read_stack(packed).data

    assert isinstance(mapped, np.memmap)
    assert not isinstance(read, np.memmap)
    np.testing.assert_array_equal(mapped, data)
    np.testing.assert_array_equal(read, data)


def test_mixed_slice_sizes_are_an_error_naming_the_odd_slice(tmp_path: Path) -> None:
    _png(tmp_path / "0.png", 1)
    _png(tmp_path / "1.png", 1)
    _png(tmp_path / "2.png", 1, shape=(9, 12))

    with pytest.raises(InputDataError, match=r"2\.png.*same size"):
        io.read_stack(tmp_path)


def test_empty_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "my empty stack"
    folder.mkdir()
    with pytest.raises(InputDataError, match=r"my empty stack.*no PNG or TIFF"):
        io.read_stack(folder)


def test_corrupt_tiff_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 64)
    with pytest.raises(InputDataError, match=r"scan\.tif.*damaged"):
        io.read_stack(path)


def test_truncated_tiff_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(
        path, np.ones((4, 64, 64), np.uint8), photometric="minisblack", compression="zlib"
    )
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputDataError, match=r"cut\.tif"):
        io.read_stack(path)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 2, 3, 16, 16)])
def test_4d_and_5d_data_are_rejected(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "timelapse.tif"
    tifffile.imwrite(path, np.zeros(shape, np.uint8), photometric="minisblack")
    with pytest.raises(InputDataError, match=rf"timelapse\.tif has {len(shape)} dimensions"):
        io.read_stack(path)


def test_non_image_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fake = tmp_path / "fake.png"
    fake.write_text("this is not a PNG")
    empty = tmp_path / "empty.jpg"
    empty.touch()

    with pytest.raises(InputDataError, match=r"notes\.txt is not an image"):
        io.read_image(text)
    with pytest.raises(InputDataError, match=r"fake\.png.*damaged"):
        io.read_image(fake)
    with pytest.raises(InputDataError, match=r"empty\.jpg is empty"):
        io.read_image(empty)
    with pytest.raises(InputDataError, match="does not exist"):
        io.read_stack(tmp_path / "missing.tif")


def test_read_image_gives_grey_rgb_and_rgba(tmp_path: Path) -> None:
    grey = _png(tmp_path / "g.png", 3)
    rgb = _png(tmp_path / "rgb.png", 3, shape=(8, 12, 3))
    rgba = _png(tmp_path / "rgba.png", 3, shape=(8, 12, 4))

    assert io.read_image(grey).shape == (8, 12)
    assert io.read_image(rgb).shape == (8, 12, 3)
    assert io.read_image(rgba).shape == (8, 12, 4)


def test_read_image_refuses_a_stack(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(InputDataError, match=r"stack\.tif.*not a single 2D image"):
        io.read_image(path)


def _leaf_tree(root: Path) -> None:
    _jpg(root / "healthy" / "leaf 2.JPG")
    _jpg(root / "healthy" / "leaf 10.jpg")
    _jpg(root / "blight" / "a.jpeg")
    _png(root / "blight" / "nested" / "b.png", 9, shape=(16, 16, 3))
    (root / "blight" / "readme.txt").write_text("notes")
    (root / "empty class").mkdir()
    _jpg(root / "stray.jpg")
    (root / ".ipynb_checkpoints").mkdir()
    _jpg(root / ".ipynb_checkpoints" / "x.jpg")


def test_class_folder_listing(tmp_path: Path) -> None:
    _leaf_tree(tmp_path)

    folder = io.list_class_folder(tmp_path)

    assert folder.class_names == ("blight", "healthy")
    assert [p.name for p in folder.paths] == ["a.jpeg", "b.png", "leaf 2.JPG", "leaf 10.jpg"]
    assert folder.class_indices.tolist() == [0, 0, 1, 1]
    reasons = {p.name: reason for p, reason in folder.skipped}
    assert "not an image" in reasons["readme.txt"]
    assert "no images" in reasons["empty class"]
    assert "not inside a class" in reasons["stray.jpg"]
    assert "x.jpg" not in reasons


def test_class_folder_needs_two_classes(tmp_path: Path) -> None:
    _jpg(tmp_path / "only" / "a.jpg")
    (tmp_path / "other").mkdir()
    with pytest.raises(InputDataError, match="at least two classes"):
        io.list_class_folder(tmp_path)


def test_class_images_skip_corrupt_files_and_resize_odd_sizes(tmp_path: Path) -> None:
    _jpg(tmp_path / "a" / "1.jpg")
    _jpg(tmp_path / "a" / "2.jpg")
    _jpg(tmp_path / "b" / "3.jpg", shape=(32, 24, 3))
    _png(tmp_path / "b" / "grey.png", 50, shape=(16, 16))
    (tmp_path / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")

    images = io.read_class_images(io.list_class_folder(tmp_path))

    assert images.data.shape == (4, 16, 16, 3)
    assert images.data.dtype == np.uint8
    assert images.class_indices.tolist() == [0, 0, 1, 1]
    assert [p.name for p in images.paths] == ["1.jpg", "2.jpg", "3.jpg", "grey.png"]
    assert [(p.name, size) for p, size in images.resized] == [("3.jpg", (32, 24))]
    skipped = {p.name: reason for p, reason in images.skipped}
    assert "broken.jpg" in skipped
    assert "damaged" in skipped["broken.jpg"]
    np.testing.assert_array_equal(images.data[3], np.full((16, 16, 3), 50))
    meta = images.as_metadata()
    assert meta["class_names"] == ["a", "b"]
    assert meta["image_size"] == [16, 16]
    assert meta["skipped"][0][0].endswith("broken.jpg")


def test_folder_kind_detection(tmp_path: Path) -> None:
    classes, slices, photos = tmp_path / "classes", tmp_path / "slices", tmp_path / "photos"
    _jpg(classes / "x" / "1.jpg")
    _jpg(classes / "y" / "1.jpg")
    _png(slices / "0.png", 1)
    _jpg(photos / "1.jpg")

    assert io.is_class_folder(classes)
    assert not io.is_slice_folder(classes)
    assert io.is_slice_folder(slices)
    assert not io.is_class_folder(slices)
    assert not io.is_slice_folder(photos)
    assert not io.is_class_folder(photos)
    assert not io.is_slice_folder(slices / "0.png")


def test_planar_rgb_tiff_reads_as_one_rgb_image(tmp_path: Path) -> None:
    path = tmp_path / "planar.tif"
    planes = np.stack([np.full((6, 7), v, np.uint8) for v in (10, 20, 30)])
    tifffile.imwrite(path, planes, photometric="rgb", planarconfig="separate")

    image = io.read_image(path)

    assert image.shape == (6, 7, 3)
    assert image[0, 0].tolist() == [10, 20, 30]
