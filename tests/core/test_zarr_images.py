"""Opening OME-Zarr images and plain zarr arrays lazily, and refusing what is not an image."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.io import read_stack
from napari_dlbio.core.zarr_images import is_zarr, open_zarr_image

NM = {"z": "nanometer", "y": "nanometer", "x": "nanometer"}


def _ome(path: Path, data: np.ndarray, axes: str, fmt=None, **kwargs) -> Path:
    """An OME-Zarr image written by ome-zarr-py (0.4 unless ``fmt`` says otherwise)."""
    fmt = fmt or FormatV04()
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    write_image(data, group, axes=axes, fmt=fmt, **{"scale_factors": (), **kwargs})
    return path


@pytest.mark.parametrize("fmt", [FormatV04(), FormatV05()], ids=["ngff0.4", "ngff0.5"])
def test_ome_zarr_pyramid_opens_as_lazy_levels_with_voxel_size(tmp_path, fmt) -> None:
    data = np.arange(4 * 64 * 80, dtype=np.uint16).reshape(4, 64, 80)
    path = _ome(
        tmp_path / "em.zarr",
        data,
        "zyx",
        fmt,
        scale_factors=(2,),
        scale={"z": 50.0, "y": 4.0, "x": 4.0},
        axes_units=NM,
    )

    image = open_zarr_image(path)

    assert image.axes == "ZYX"
    assert [level.shape for level in image.levels] == [(4, 64, 80), (4, 32, 40)]
    assert all(isinstance(level, da.Array) for level in image.levels)
    assert image.scale == (50.0, 4.0, 4.0)
    assert image.units == ("nanometer",) * 3
    assert image.source == path
    assert image.metadata == {}
    np.testing.assert_array_equal(image.levels[0].compute(), data)


def test_a_2d_image_is_a_stack_of_one_slice(tmp_path) -> None:
    data = np.arange(16 * 17, dtype=np.uint8).reshape(16, 17)

    image = open_zarr_image(_ome(tmp_path / "a.zarr", data, "yx"))

    assert image.axes == "ZYX"
    assert image.levels[0].shape == (1, 16, 17)
    assert image.scale == (1.0, 1.0, 1.0)
    assert image.units == ("", "", "")


def test_one_time_point_is_dropped_and_channels_go_last(tmp_path) -> None:
    data = np.random.default_rng(0).integers(0, 255, (1, 2, 3, 8, 9), dtype=np.uint8)
    one_channel = data[:, :1]

    image = open_zarr_image(_ome(tmp_path / "c2.zarr", data, "tczyx"))
    grey = open_zarr_image(_ome(tmp_path / "c1.zarr", one_channel, "tczyx"))

    assert image.axes == "ZYXC"
    np.testing.assert_array_equal(image.levels[0].compute(), np.moveaxis(data[0], 0, -1))
    assert grey.axes == "ZYX"
    np.testing.assert_array_equal(grey.levels[0].compute(), one_channel[0, 0])


def test_more_than_one_time_point_is_refused_naming_the_axes(tmp_path) -> None:
    path = _ome(tmp_path / "movie.zarr", np.zeros((3, 2, 4, 16, 16), np.uint8), "tczyx")

    with pytest.raises(InputDataError) as error:
        open_zarr_image(path)

    message = str(error.value)
    assert "t=3, c=2, z=4, y=16, x=16" in message
    assert "3 time points" in message
    assert "Z, Y, X" in message


def _with_axes(path: Path, axes: list[dict], shape: tuple[int, ...]) -> Path:
    """An OME-Zarr 0.4 image whose metadata declares ``axes`` (hand-written)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=shape, dtype="u1")
    transform = [{"type": "scale", "scale": [1.0] * len(shape)}]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": transform}],
        }
    ]
    return path


def test_unknown_or_missing_axes_are_refused_naming_them(tmp_path) -> None:
    space = [{"name": n, "type": "space"} for n in "zyx"]
    angles = _with_axes(
        tmp_path / "angles.zarr", [{"name": "angle", "type": "angle"}, *space], (2, 3, 4, 5)
    )
    no_x = _with_axes(
        tmp_path / "nox.zarr",
        [{"name": "z", "type": "space"}, {"name": "y", "type": "space"}],
        (3, 4),
    )

    with pytest.raises(InputDataError, match=r"angle=2, z=3, y=4, x=5 \(unknown axes angle\)"):
        open_zarr_image(angles)
    with pytest.raises(InputDataError, match=r"z=3, y=4 \(no X axis\)"):
        open_zarr_image(no_x)


def test_plain_arrays_open_with_their_own_or_guessed_axes(tmp_path) -> None:
    stack = zarr.create_array(str(tmp_path / "stack.zarr"), shape=(5, 30, 40), dtype="f4")
    stack[:] = 1.5
    zarr.create_array(
        str(tmp_path / "named.zarr"), shape=(30, 40, 2), dtype="u1", dimension_names=["y", "x", "c"]
    )
    zarr.create_array(str(tmp_path / "rgb.zarr"), shape=(30, 40, 3), dtype="u1", zarr_format=2)

    image = open_zarr_image(tmp_path / "stack.zarr")

    assert image.axes == "ZYX"
    assert image.levels[0].shape == (5, 30, 40)
    assert float(image.levels[0][2, 3, 4].compute()) == 1.5
    assert open_zarr_image(tmp_path / "named.zarr").levels[0].shape == (1, 30, 40, 2)
    assert open_zarr_image(tmp_path / "rgb.zarr").axes == "ZYXC"


def test_a_group_with_one_array_opens_that_array(tmp_path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=(2, 8, 8), dtype="u1")

    image = open_zarr_image(tmp_path / "g.zarr")

    assert image.levels[0].shape == (2, 8, 8)


def test_a_group_without_an_image_says_what_it_holds(tmp_path) -> None:
    folders = zarr.open_group(str(tmp_path / "project.zarr"), mode="w")
    folders.create_group("a")
    folders.create_group("b")
    arrays = zarr.open_group(str(tmp_path / "arrays.zarr"), mode="w")
    arrays.create_array("0", shape=(2, 8, 8), dtype="u1")
    arrays.create_array("1", shape=(2, 4, 4), dtype="u1")
    plate = zarr.open_group(str(tmp_path / "plate.zarr"), mode="w", zarr_format=2)
    plate.attrs["plate"] = {"rows": [{"name": "A"}], "columns": [{"name": "1"}]}

    with pytest.raises(InputDataError) as groups:
        open_zarr_image(tmp_path / "project.zarr")
    with pytest.raises(InputDataError, match=r"holds 2 arrays \(0, 1\).*arrays\.zarr/0"):
        open_zarr_image(tmp_path / "arrays.zarr")
    with pytest.raises(InputDataError, match="OME-Zarr plate"):
        open_zarr_image(tmp_path / "plate.zarr")
    assert "holds no image array (found groups a, b)" in str(groups.value)
    assert f"open the image inside, e.g. {tmp_path / 'project.zarr' / 'a'}" in str(groups.value)


def test_not_a_store_and_unreadable_pixels_are_refused(tmp_path) -> None:
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    zarr.create_array(str(tmp_path / "c.zarr"), shape=(2, 4, 4), dtype="c8")
    zarr.create_array(str(tmp_path / "5d.zarr"), shape=(2, 2, 2, 4, 4), dtype="u1")

    with pytest.raises(InputDataError, match=r"empty\.zarr is not a zarr store"):
        open_zarr_image(empty)
    with pytest.raises(InputDataError, match="does not exist"):
        open_zarr_image(tmp_path / "missing.zarr")
    with pytest.raises(InputDataError, match="complex64 pixels"):
        open_zarr_image(tmp_path / "c.zarr")
    with pytest.raises(InputDataError, match=r"5 dimensions.*without axis names"):
        open_zarr_image(tmp_path / "5d.zarr")


def test_opening_reads_no_pixels(tmp_path) -> None:
    data = np.random.default_rng(1).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    path = _ome(tmp_path / "small.zarr", data, "zyx", scale_factors=(2,))
    chunks = [
        f for f in path.rglob("*") if f.is_file() and not f.name.startswith((".z", "zarr.json"))
    ]
    assert chunks
    for chunk in chunks:  # any decoding would now fail
        chunk.write_bytes(b"not a chunk")
    big = zarr.open_group(str(tmp_path / "big.zarr"), mode="w")
    big.create_array("volume", shape=(64, 4096, 4096), chunks=(1, 1024, 1024), dtype="u2")

    image = open_zarr_image(path)
    huge = open_zarr_image(tmp_path / "big.zarr")

    assert [level.shape for level in image.levels] == [(3, 64, 64), (3, 32, 32)]
    assert huge.levels[0].shape == (64, 4096, 4096)
    assert huge.levels[0].numblocks == (64, 4, 4)
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the codec says
        image.levels[0][0].compute()


def test_napari_dlbio_attributes_come_back_as_metadata(tmp_path) -> None:
    path = _ome(tmp_path / "mask.zarr", np.zeros((2, 8, 8), np.uint8), "zyx")
    group = zarr.open_group(str(path), mode="a")
    group.attrs["napari-dlbio"] = {"layer_type": "labels", "class_names": ["bg", "membrane"]}
    other = _ome(tmp_path / "other.zarr", np.zeros((2, 8, 8), np.uint8), "zyx")
    zarr.open_group(str(other), mode="a").attrs["napari-dlbio"] = {"class_names": [1, 2]}

    assert open_zarr_image(path).metadata == {
        "layer_type": "labels",
        "class_names": ["bg", "membrane"],
    }
    assert open_zarr_image(other).metadata == {}


def test_is_zarr_knows_stores_by_their_metadata_or_name(tmp_path) -> None:
    zarr.create_array(str(tmp_path / "v3"), shape=(2, 2), dtype="u1")
    zarr.open_group(str(tmp_path / "v2"), mode="w", zarr_format=2)
    (tmp_path / "named.zarr").mkdir()
    (tmp_path / "plain").mkdir()
    (tmp_path / "file.zarr").write_bytes(b"")

    assert is_zarr(tmp_path / "v3")
    assert is_zarr(str(tmp_path / "v2"))
    assert is_zarr(tmp_path / "named.zarr")
    assert not is_zarr(tmp_path / "plain")
    assert not is_zarr(tmp_path / "file.zarr")
    assert not is_zarr(tmp_path / "missing.zarr")


def test_read_stack_gives_the_full_resolution_lazily(tmp_path) -> None:
    data = np.arange(2 * 32 * 32, dtype=np.uint8).reshape(2, 32, 32)
    path = _ome(tmp_path / "em.zarr", data, "zyx", scale_factors=(2,))

    stack = read_stack(path)

    assert isinstance(stack.data, da.Array)
    assert stack.axes == "ZYX"
    assert stack.source == path
    np.testing.assert_array_equal(np.asarray(stack.data), data)
