"""Saving Labels layers: lossless round trips, no silent overwrite, nothing half-written."""

from __future__ import annotations

import os
from pathlib import Path

import npe2
import numpy as np
import pytest
import tifffile

from napari_dlbio.core import io
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.io import OutputExistsError, read_stack

PLUGIN = "napari-dlbio"


@pytest.fixture(autouse=True, scope="module")
def _discover_plugins() -> None:
    npe2.PluginManager.instance().discover()


def _labels(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(1)
    high = 3 if dtype == np.uint8 else 40_000
    return rng.integers(0, high, size=(3, 17, 23)).astype(dtype)


def _save(path: Path, data: np.ndarray, meta: dict | None = None) -> list[str]:
    return npe2.write(str(path), [(data, meta or {}, "labels")], plugin_name=PLUGIN)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_labels_tiff_round_trip_is_lossless(tmp_path: Path, dtype: type) -> None:
    labels = _labels(dtype)

    written = _save(tmp_path / "mask.tif", labels, {"metadata": {"class_names": ["a", "b"]}})

    assert written == [str(tmp_path / "mask.tif")]
    back = read_stack(tmp_path / "mask.tif")
    assert back.data.dtype == dtype
    np.testing.assert_array_equal(back.data, labels)
    assert back.metadata["class_names"] == ["a", "b"]
    # The labels are compressed: a few-class mask must not cost its raw size.
    if dtype == np.uint8:
        assert (tmp_path / "mask.tif").stat().st_size < labels.nbytes


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_labels_png_folder_round_trip_is_lossless(tmp_path: Path, dtype: type) -> None:
    labels = _labels(dtype)

    written = _save(tmp_path / "mask.png", labels)

    folder = tmp_path / "mask"
    assert written == [str(folder / f"mask_{z:04d}.png") for z in range(3)]
    back = read_stack(folder)
    assert back.data.dtype == dtype
    np.testing.assert_array_equal(back.data, labels)


def test_a_napari_labels_layer_saves_through_the_plugin(tmp_path: Path) -> None:
    from napari.layers import Labels

    layer = Labels(np.array([[[0, 1], [2, 3]]], dtype=np.int32), name="scribbles")

    npe2.write(str(tmp_path / "scribbles.tif"), [layer], plugin_name=PLUGIN)

    back = read_stack(tmp_path / "scribbles.tif")
    assert back.data.dtype == np.uint8  # int32 napari labels shrink to the smallest type
    np.testing.assert_array_equal(back.data, [[[0, 1], [2, 3]]])


def test_2d_labels_save_as_one_slice(tmp_path: Path) -> None:
    labels = np.eye(5, dtype=np.uint8)
    _save(tmp_path / "one.png", labels)
    np.testing.assert_array_equal(read_stack(tmp_path / "one").data, labels[np.newaxis])


def test_existing_tiff_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "mask.tif"
    path.write_bytes(b"precious")

    with pytest.raises(OutputExistsError, match=r"mask\.tif already exists"):
        _save(path, _labels(np.uint8))

    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]


def test_png_slices_onto_an_existing_file_say_that_it_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "mask.tif"
    target.write_bytes(b"an earlier mask")
    with pytest.raises(OutputExistsError, match=r"mask.tif is a file, and the PNG slices"):
        io.write_labels_pngs(target, np.zeros((2, 4, 4), np.uint8))
    assert target.read_bytes() == b"an earlier mask"


def test_existing_png_folder_is_never_overwritten(tmp_path: Path) -> None:
    folder = tmp_path / "mask"
    folder.mkdir()
    (folder / "mask_0000.png").write_bytes(b"precious")

    with pytest.raises(OutputExistsError, match="already exists and is not empty"):
        _save(tmp_path / "mask.png", _labels(np.uint8))

    assert (folder / "mask_0000.png").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask"]


def test_an_empty_existing_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "mask").mkdir()
    _save(tmp_path / "mask.png", _labels(np.uint8))
    assert len(list((tmp_path / "mask").iterdir())) == 3


def test_failed_tiff_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write_half_then_fail(path, *args, **kwargs) -> None:
        Path(path).write_bytes(b"II*\x00half")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", write_half_then_fail)

    with pytest.raises(OSError, match="disk full"):
        io.write_labels_tiff(tmp_path / "mask.tif", _labels(np.uint8))

    assert list(tmp_path.iterdir()) == []


def test_failed_png_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = io.iio.imwrite
    calls = []

    def fail_on_third_slice(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(io.iio, "imwrite", fail_on_third_slice)

    with pytest.raises(OSError, match="disk full"):
        io.write_labels_pngs(tmp_path / "mask", _labels(np.uint8))

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("labels", "target", "expected"),
    [
        (np.full((2, 2), -1, np.int32), "neg.tif", "range from -1"),
        (np.full((2, 2), 70_000, np.int32), "big.png", "holds 0 to 65535"),
        (np.zeros((2, 2, 2, 2), np.uint8), "4d.tif", r"shape \(2, 2, 2, 2\)"),
        (np.zeros((2, 2), np.float32), "float.tif", "must be integers"),
    ],
)
def test_unsavable_labels_are_refused_before_writing(
    tmp_path: Path, labels: np.ndarray, target: str, expected: str
) -> None:
    with pytest.raises(InputDataError, match=expected):
        _save(tmp_path / target, labels)
    assert list(tmp_path.iterdir()) == []


def test_saved_files_are_readable_by_others(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        _save(tmp_path / "mask.tif", _labels(np.uint8))
        _save(tmp_path / "mask.png", _labels(np.uint8))
    finally:
        os.umask(old_umask)
    # Private temp-file permissions (0600/0700) must not leak into the results.
    assert (tmp_path / "mask.tif").stat().st_mode & 0o044
    assert (tmp_path / "mask").stat().st_mode & 0o055
