"""Writing OME-Zarr slice by slice: complete or nothing, never over an output unasked."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader

from napari_dlbio.core.io import OutputExistsError, WriteError
from napari_dlbio.core.zarr_images import open_zarr_image
from napari_dlbio.core.zarr_output import MAX_CHUNK_SIDE, open_zarr_output

LABELS = {"layer_type": "labels", "class_names": ["background", "membrane"]}


def _write(path: Path, data: np.ndarray, **kwargs) -> None:
    with open_zarr_output(path, shape=data.shape[:3], dtype=data.dtype, **kwargs) as store:
        for z, plane in enumerate(data):
            store.write(z, plane)


def _write_slices(path: Path, slices: list[int], shape=(3, 8, 8), **kwargs) -> None:
    """Write zeros into the given slices only (a slice may come twice)."""
    with open_zarr_output(path, shape=shape, dtype=np.uint8, **kwargs) as store:
        for z in slices:
            store.write(z, np.zeros(shape[1:], np.uint8))


def _fail_after_one_slice(path: Path, shape: tuple[int, int, int], **kwargs) -> None:
    with open_zarr_output(path, shape=shape, dtype=np.uint8, **kwargs) as store:
        store.write(0, np.zeros(shape[1:], np.uint8))
        raise RuntimeError("prediction failed")


def _store_appears_meanwhile(path: Path) -> None:
    with open_zarr_output(path, shape=(1, 4, 4), dtype=np.uint8) as store:
        store.write(0, np.zeros((4, 4), np.uint8))
        zarr.open_group(str(path), mode="w")  # someone else's store


def _mask(shape=(3, 40, 50), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, shape, dtype=np.uint8)


def test_a_mask_reopens_with_its_voxel_size_and_as_labels(tmp_path) -> None:
    mask = _mask()
    path = tmp_path / "mask.zarr"

    _write(path, mask, scale=(50.0, 4.0, 4.0), units=("nanometer",) * 3, metadata=LABELS)

    image = open_zarr_image(path)
    assert image.axes == "ZYX"
    np.testing.assert_array_equal(image.levels[0].compute(), mask)
    assert image.scale == (50.0, 4.0, 4.0)
    assert image.units == ("nanometer",) * 3
    assert image.metadata == LABELS
    assert image.levels[0].chunksize == (1, 40, 50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.zarr"]


def test_the_store_is_ngff_that_ome_zarr_py_reads(tmp_path) -> None:
    path = tmp_path / "mask.zarr"
    _write(path, _mask(), scale=(50.0, 4.0, 4.0), units=("nanometer",) * 3, metadata=LABELS)

    attributes = json.loads((path / ".zattrs").read_text())
    (node,) = [n for n in Reader(parse_url(str(path)))() if n.load(Multiscales)]

    (multiscale,) = attributes["multiscales"]
    assert multiscale["version"] == "0.4"
    assert [axis["name"] for axis in multiscale["axes"]] == ["z", "y", "x"]
    assert multiscale["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [50.0, 4.0, 4.0]}
    ]
    assert attributes["image-label"]["properties"] == [
        {"label-value": 0, "class": "background"},
        {"label-value": 1, "class": "membrane"},
    ]
    assert node.data[0].shape == (3, 40, 50)


def test_probabilities_have_a_channel_per_class_with_its_name(tmp_path) -> None:
    probabilities = np.random.default_rng(2).random((2, 30, 20, 3), dtype=np.float32)
    path = tmp_path / "p.zarr"

    _write(path, probabilities, channels=3, channel_names=("a", "b", "c"))

    attributes = json.loads((path / ".zattrs").read_text())
    (multiscale,) = attributes["multiscales"]
    assert [axis["name"] for axis in multiscale["axes"]] == ["c", "z", "y", "x"]
    labels = [channel["label"] for channel in attributes["omero"]["channels"]]
    assert labels == ["a", "b", "c"]
    image = open_zarr_image(path)
    assert image.axes == "ZYXC"
    assert image.metadata == {}
    np.testing.assert_array_equal(image.levels[0].compute(), probabilities)


def test_big_slices_get_tiled_chunks_and_coarser_levels(tmp_path) -> None:
    data = np.random.default_rng(3).integers(0, 5, (2, 1500, 2500), dtype=np.uint8)
    path = tmp_path / "big.zarr"

    _write(path, data, scale=(50.0, 4.0, 4.0))

    image = open_zarr_image(path)
    shapes = [level.shape for level in image.levels]
    assert shapes == [(2, 1500, 2500), (2, 750, 1250), (2, 375, 625)]
    assert all(max(level.chunksize) <= MAX_CHUNK_SIDE for level in image.levels)
    assert all(level.chunksize[0] == 1 for level in image.levels)
    np.testing.assert_array_equal(image.levels[0].compute(), data)
    np.testing.assert_array_equal(image.levels[2].compute(), data[:, ::4, ::4])
    scales = [
        d["coordinateTransformations"][0]["scale"]
        for d in json.loads((path / ".zattrs").read_text())["multiscales"][0]["datasets"]
    ]
    assert scales == [[50.0, 4.0, 4.0], [50.0, 8.0, 8.0], [50.0, 16.0, 16.0]]


def test_slices_may_be_written_from_several_threads_in_any_order(tmp_path) -> None:
    mask = _mask((24, 64, 48), seed=4)
    order = list(range(len(mask)))
    random.Random(0).shuffle(order)
    path = tmp_path / "mask.zarr"

    with open_zarr_output(path, shape=mask.shape, dtype=np.uint8) as store:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda z: store.write(z, mask[z]), order))
        assert store.written == len(mask)

    np.testing.assert_array_equal(open_zarr_image(path).levels[0].compute(), mask)


def test_a_missing_slice_keeps_nothing(tmp_path) -> None:
    path = tmp_path / "mask.zarr"

    with pytest.raises(WriteError, match="only 2 of 3 slices were written; nothing was kept"):
        _write_slices(path, [0, 2, 2])

    assert list(tmp_path.iterdir()) == []


def test_an_error_while_writing_keeps_nothing_and_the_old_store(tmp_path) -> None:
    path = tmp_path / "mask.zarr"
    old = _mask(seed=5)
    _write(path, old)

    with pytest.raises(RuntimeError, match="prediction failed"):
        _fail_after_one_slice(path, old.shape, overwrite=True)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.zarr"]
    np.testing.assert_array_equal(open_zarr_image(path).levels[0].compute(), old)


def test_an_existing_output_is_refused_unless_overwrite(tmp_path) -> None:
    path = tmp_path / "mask.zarr"
    old, new = _mask(seed=6), _mask(seed=7)
    _write(path, old)

    with pytest.raises(OutputExistsError) as refused:
        _write(path, new)
    np.testing.assert_array_equal(open_zarr_image(path).levels[0].compute(), old)
    _write(path, new, overwrite=True)

    assert str(path) in str(refused.value)
    assert "--overwrite" in str(refused.value)
    assert "another name" in str(refused.value)
    np.testing.assert_array_equal(open_zarr_image(path).levels[0].compute(), new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.zarr"]


def test_overwrite_replaces_a_file_too(tmp_path) -> None:
    path = tmp_path / "mask.zarr"
    path.write_text("not a store")

    _write(path, _mask(), overwrite=True)

    assert open_zarr_image(path).levels[0].shape == (3, 40, 50)


def test_an_output_that_appears_meanwhile_is_not_replaced(tmp_path) -> None:
    path = tmp_path / "mask.zarr"

    with pytest.raises(OutputExistsError, match="already exists"):
        _store_appears_meanwhile(path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.zarr"]
    assert (path / "zarr.json").is_file()


def test_a_folder_that_cannot_be_made_is_a_write_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")

    with pytest.raises(WriteError, match="Could not write"):
        _write(blocker / "mask.zarr", _mask())


def test_wrong_slices_and_arguments_are_programming_errors(tmp_path) -> None:
    with open_zarr_output(tmp_path / "m.zarr", shape=(1, 4, 4), dtype=np.uint8) as store:
        with pytest.raises(ValueError, match="outside the stack of 1 slices"):
            store.write(1, np.zeros((4, 4), np.uint8))
        with pytest.raises(ValueError, match=r"shape \(4, 5\), expected \(4, 4\)"):
            store.write(0, np.zeros((4, 5), np.uint8))
        with pytest.raises(ValueError, match="float64 values"):
            store.write(0, np.zeros((4, 4)))
        store.write(0, np.zeros((4, 4), np.uint8))
    for wrong in (
        {"shape": (0, 4, 4)},
        {"channels": 0},
        {"scale": (1.0, -1.0, 1.0)},
        {"units": ("nm",)},
        {"channels": 2, "channel_names": ("a",)},
    ):
        arguments = {"shape": (1, 4, 4), **wrong}
        with pytest.raises(ValueError):  # noqa: PT011 - each says what is wrong
            _write_slices(tmp_path / "x.zarr", [], **arguments)
    assert not (tmp_path / "x.zarr").exists()
