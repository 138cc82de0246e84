"""The npe2 reader: what napari opens through napari-dlbio, and what it leaves to others."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import imageio.v3 as iio
import npe2
import numpy as np
import pytest
import tifffile
import zarr

from napari_dlbio._reader import get_reader, read_class_folder, read_stack_layer, read_zarr_layer
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.io import write_labels_tiff
from napari_dlbio.core.zarr_output import open_zarr_output

PLUGIN = "napari-dlbio"


@pytest.fixture(autouse=True, scope="module")
def _discover_plugins() -> None:
    """napari discovers installed plugins at start-up; npe2's own manager does it on demand."""
    npe2.PluginManager.instance().discover()


def _read(path: Path) -> list[tuple]:
    return npe2.read([str(path)], stack=False, plugin_name=PLUGIN)


def test_isbi_stack_opens_as_one_image_layer(isbi_dir: Path) -> None:
    layers = _read(isbi_dir / "train-volume.tif")

    assert len(layers) == 1
    data, kwargs, layer_type = layers[0]
    assert layer_type == "image"
    assert data.shape == (30, 512, 512)
    assert data.dtype == np.uint8
    assert kwargs["name"] == "train-volume"
    assert kwargs["metadata"]["axes"] == "ZYX"


def test_plantvillage_opens_as_rgb_stack_with_classes(plantvillage_dir: Path) -> None:
    layers = _read(plantvillage_dir)

    data, kwargs, layer_type = layers[0]
    meta = kwargs["metadata"]
    assert layer_type == "image"
    assert kwargs["rgb"] is True
    assert data.shape == (900, 256, 256, 3)
    assert len(meta["class_names"]) == 15
    assert meta["class_names"][0] == "Pepper__bell___Bacterial_spot"
    assert np.bincount(meta["class_indices"]).tolist() == [60] * 15
    assert len(meta["paths"]) == 900
    assert meta["skipped"] == []
    assert meta["resized"] == []
    # File names with spaces survive, and every path is in the folder of its class.
    for path, index in zip(meta["paths"], meta["class_indices"], strict=True):
        assert Path(path).parent.name == meta["class_names"][index]
    assert any(" " in Path(p).name for p in meta["paths"])


def test_slice_folder_opens_in_natural_order(tmp_path: Path) -> None:
    for number in (10, 9, 1):
        iio.imwrite(tmp_path / f"{number}.png", np.full((4, 5), number, np.uint8))

    ((data, kwargs, layer_type),) = _read(tmp_path)

    assert layer_type == "image"
    assert data[:, 0, 0].tolist() == [1, 9, 10]
    assert kwargs["metadata"]["slice_names"] == ["1.png", "9.png", "10.png"]


def test_rgb_tiff_opens_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "colour.tif"
    tifffile.imwrite(path, np.zeros((2, 6, 7, 3), np.uint8), photometric="rgb")

    ((data, kwargs, _),) = _read(path)

    assert data.shape == (2, 6, 7, 3)
    assert kwargs["rgb"] is True


def test_labels_tiff_written_by_the_plugin_reopens_as_labels(tmp_path: Path) -> None:
    path = write_labels_tiff(
        tmp_path / "mask.tif", np.ones((2, 4, 4), np.uint8), class_names=("bg", "membrane")
    )

    ((_, kwargs, layer_type),) = _read(path)

    assert layer_type == "labels"
    assert kwargs["metadata"]["class_names"] == ["bg", "membrane"]


def test_single_png_and_jpg_are_left_to_napari(tmp_path: Path) -> None:
    png, jpg = tmp_path / "a.png", tmp_path / "b.jpg"
    iio.imwrite(png, np.zeros((4, 4), np.uint8))
    iio.imwrite(jpg, np.zeros((4, 4, 3), np.uint8))

    assert get_reader(str(png)) is None
    assert get_reader(str(jpg)) is None
    assert PLUGIN not in {
        r.plugin_name for r in npe2.PluginManager.instance().iter_compatible_readers([str(png)])
    }


def test_unrelated_folders_and_files_are_declined(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.txt").write_text("hi")
    photos = tmp_path / "photos"
    photos.mkdir()
    iio.imwrite(photos / "leaf.jpg", np.zeros((4, 4, 3), np.uint8))

    assert get_reader(str(docs)) is None
    assert get_reader(str(photos)) is None
    assert get_reader(str(docs / "notes.txt")) is None
    assert get_reader([str(docs), str(photos)]) is None


def test_readers_chosen_by_kind(tmp_path: Path) -> None:
    classes = tmp_path / "classes"
    for name in ("a", "b"):
        (classes / name).mkdir(parents=True)
        iio.imwrite(classes / name / "1.jpg", np.zeros((4, 4, 3), np.uint8))

    assert get_reader(str(classes)) is read_class_folder
    assert get_reader(str(tmp_path / "x.TIF")) is read_stack_layer
    assert get_reader([str(tmp_path / "x.tiff")]) is read_stack_layer


def _corrupt_tiff(tmp_path: Path) -> Path:
    path = tmp_path / "broken stack.tif"
    path.write_bytes(b"II*\x00garbage")
    return path


def _empty_folder(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.mkdir()
    return path


def _mixed_sizes(tmp_path: Path) -> Path:
    path = tmp_path / "mixed"
    path.mkdir()
    iio.imwrite(path / "0.png", np.zeros((4, 4), np.uint8))
    iio.imwrite(path / "1.png", np.zeros((5, 4), np.uint8))
    return path


def _five_d(tmp_path: Path) -> Path:
    path = tmp_path / "5d.tif"
    tifffile.imwrite(path, np.zeros((2, 2, 2, 4, 4), np.uint8), photometric="minisblack")
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_corrupt_tiff, r"broken stack\.tif.*damaged"),
        (_empty_folder, r"empty contains no PNG or TIFF"),
        (_mixed_sizes, r"1\.png is 4x5 pixels.*same size"),
        (_five_d, r"5d\.tif has 5 dimensions"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path: Path, make, expected: str) -> None:
    path = make(tmp_path)
    reader = get_reader(str(path))
    assert reader is not None
    with pytest.raises(InputDataError, match=expected):
        reader(str(path))


def _ome_zarr(path: Path, data: np.ndarray, axes: str = "zyx", **kwargs) -> Path:
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(data, group, axes=axes, fmt=FormatV04(), **{"scale_factors": (), **kwargs})
    return path


def test_ome_zarr_pyramid_opens_as_a_lazy_multiscale_layer_with_its_scale(tmp_path: Path) -> None:
    data = np.arange(3 * 64 * 64, dtype=np.uint16).reshape(3, 64, 64)
    units = dict.fromkeys("zyx", "nanometer")
    scale = {"z": 50.0, "y": 4.0, "x": 4.0}
    path = _ome_zarr(
        tmp_path / "em.ome.zarr", data, scale_factors=(2, 4), scale=scale, axes_units=units
    )

    assert get_reader(str(path)) is read_zarr_layer
    ((levels, kwargs, layer_type),) = _read(path)

    assert layer_type == "image"
    assert kwargs["multiscale"] is True
    assert [level.shape for level in levels] == [(3, 64, 64), (3, 32, 32), (3, 16, 16)]
    assert all(isinstance(level, da.Array) for level in levels)
    assert kwargs["scale"] == (50.0, 4.0, 4.0)
    assert kwargs["units"] == ("nanometer",) * 3
    assert kwargs["rgb"] is False
    assert kwargs["name"] == "em"
    assert kwargs["metadata"]["axes"] == "ZYX"
    np.testing.assert_array_equal(levels[0].compute(), data)


def test_plain_zarr_array_opens_as_one_lazy_array(tmp_path: Path) -> None:
    store = zarr.create_array(str(tmp_path / "raw.zarr"), shape=(4, 16, 3), dtype="f4")
    store[:] = 2.0

    ((data, kwargs, layer_type),) = _read(tmp_path / "raw.zarr")

    assert layer_type == "image"
    assert isinstance(data, da.Array)
    assert data.shape == (4, 16, 3)  # slices 3 pixels wide, not colour
    assert kwargs["multiscale"] is False
    assert kwargs["rgb"] is False
    assert kwargs["scale"] == (1.0, 1.0, 1.0)
    assert "units" not in kwargs


def test_zarr_channels_open_as_tiff_channels_do(tmp_path: Path) -> None:
    two = _ome_zarr(tmp_path / "two.zarr", np.zeros((2, 3, 8, 8), np.uint8), "czyx")
    rgb = _ome_zarr(tmp_path / "rgb.zarr", np.zeros((3, 3, 8, 8), np.uint8), "czyx")

    ((two_data, two_kwargs, _),) = _read(two)
    ((_, rgb_kwargs, _),) = _read(rgb)

    assert two_data.shape == (3, 8, 8, 2)
    assert two_kwargs["channel_axis"] == 3
    assert rgb_kwargs["rgb"] is True


def test_a_mask_written_as_zarr_reopens_as_labels(tmp_path: Path) -> None:
    mask = np.zeros((2, 8, 8), np.uint8)
    mask[:, 2:4] = 1
    labels = {"layer_type": "labels", "class_names": ["background", "membrane"]}
    path = tmp_path / "mask.zarr"
    with open_zarr_output(path, shape=mask.shape, dtype=np.uint8, metadata=labels) as store:
        for z, plane in enumerate(mask):
            store.write(z, plane)

    ((data, kwargs, layer_type),) = _read(path)

    assert layer_type == "labels"
    assert kwargs["metadata"]["class_names"] == ["background", "membrane"]
    np.testing.assert_array_equal(np.asarray(data), mask)


def test_a_zarr_that_is_not_an_image_gives_a_clear_error(tmp_path: Path) -> None:
    project = zarr.open_group(str(tmp_path / "project.zarr"), mode="w")
    project.create_group("raw")
    movie = _ome_zarr(tmp_path / "movie.zarr", np.zeros((2, 1, 4, 8, 8), np.uint8), "tczyx")

    with pytest.raises(InputDataError, match=r"no image array \(found groups raw\)"):
        get_reader(str(tmp_path / "project.zarr"))(str(tmp_path / "project.zarr"))
    with pytest.raises(InputDataError, match=r"t=2, c=1, z=4, y=8, x=8: 2 time points"):
        get_reader(str(movie))(str(movie))
