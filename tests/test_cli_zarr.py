"""``dlbio predict`` with OME-Zarr in and out, on a small crop of the ISBI 2012 volume."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_image

from napari_dlbio.cli import main
from napari_dlbio.core.zarr_images import open_zarr_image

MODEL = ["--model", "builtin:em-membranes"]
NM = dict.fromkeys("zyx", "nanometer")


def _ome_zarr(path: Path, data: np.ndarray, axes: str, **kwargs) -> Path:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(data, group, axes=axes, fmt=FormatV04(), **{"scale_factors": (), **kwargs})
    return path


@pytest.fixture(scope="module")
def inputs(isbi_dir, tmp_path_factory) -> dict[str, Path]:
    """Slices 0-2 of the training volume, 256 x 256 pixels, as a TIFF and as OME-Zarr."""
    folder = tmp_path_factory.mktemp("zarr_inputs")
    volume = tifffile.imread(isbi_dir / "train-volume.tif")[:3, :256, :256]
    tiff = folder / "em.tif"
    tifffile.imwrite(tiff, volume, photometric="minisblack")
    store = _ome_zarr(
        folder / "em.zarr",
        volume,
        "zyx",
        scale_factors=(2,),
        scale={"z": 50.0, "y": 4.0, "x": 4.0},
        axes_units=NM,
    )
    return {"tiff": tiff, "zarr": store}


@pytest.fixture(scope="module")
def tiff_results(inputs, tmp_path_factory) -> dict[str, np.ndarray]:
    """What ``dlbio predict`` writes as TIFF for the same slices: the reference."""
    folder = tmp_path_factory.mktemp("tiff_results")
    argv = ["predict", *MODEL, "--images", str(inputs["tiff"]), "--quiet"]
    argv += ["--out", str(folder / "mask.tif"), "--probabilities", str(folder / "p.tif")]
    assert main(argv) == 0
    return {"mask": tifffile.imread(folder / "mask.tif"), "p": tifffile.imread(folder / "p.tif")}


def _predict(images: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", *MODEL, "--images", str(images), "--out", str(out), "--quiet", *extra]


def test_zarr_in_zarr_out_gives_the_tiff_mask_with_the_inputs_voxel_size(
    inputs, tiff_results, tmp_path, capsys
) -> None:
    mask_path, probabilities_path = tmp_path / "mask.zarr", tmp_path / "p.zarr"

    code = main(_predict(inputs["zarr"], mask_path, "--probabilities", str(probabilities_path)))

    assert code == 0, capsys.readouterr().err
    mask = open_zarr_image(mask_path)
    probabilities = open_zarr_image(probabilities_path)
    assert isinstance(mask.levels[0], da.Array)
    assert np.array_equal(mask.levels[0].compute(), tiff_results["mask"])
    assert mask.metadata == {"layer_type": "labels", "class_names": ["background", "membrane"]}
    assert mask.scale == probabilities.scale == (50.0, 4.0, 4.0)
    assert mask.units == probabilities.units == ("nanometer",) * 3
    assert probabilities.axes == "ZYXC"
    np.testing.assert_allclose(
        probabilities.levels[0].compute(), np.moveaxis(tiff_results["p"], 1, -1), atol=1e-6
    )
    assert f"Wrote {mask_path} and {probabilities_path}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.zarr", "p.zarr"]


def test_a_tiff_input_gives_zarr_outputs_the_pixel_size_given(inputs, tmp_path) -> None:
    out = tmp_path / "mask.zarr"

    assert main(_predict(inputs["tiff"], out, "--pixel-size", "40", "5", "5")) == 0

    assert open_zarr_image(out).scale == (40.0, 5.0, 5.0)
    assert open_zarr_image(out).units == ("", "", "")


def test_an_existing_output_is_refused_without_overwrite_and_replaced_with_it(
    inputs, tiff_results, tmp_path, capsys
) -> None:
    out = tmp_path / "mask.zarr"
    old = _ome_zarr(out, np.full((1, 8, 8), 7, np.uint8), "zyx")
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}

    refused = main(_predict(inputs["zarr"], out))
    error = capsys.readouterr().err

    assert refused == 2
    assert f"{out} already exists" in error
    assert "--overwrite" in error
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert main(_predict(inputs["zarr"], out, "--overwrite")) == 0
    assert np.array_equal(open_zarr_image(out).levels[0].compute(), tiff_results["mask"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.zarr"]


def test_overwrite_replaces_a_tiff_mask_too(inputs, tiff_results, tmp_path) -> None:
    out = tmp_path / "mask.tif"
    out.write_bytes(b"old")

    assert main(_predict(inputs["zarr"], out)) == 2
    assert out.read_bytes() == b"old"
    assert main(_predict(inputs["zarr"], out, "--overwrite")) == 0
    assert np.array_equal(tifffile.imread(out), tiff_results["mask"])


def test_zarr_inputs_that_are_no_image_exit_2_and_write_nothing(tmp_path, capsys) -> None:
    project = zarr.open_group(str(tmp_path / "project.zarr"), mode="w")
    project.create_group("raw")
    project.create_group("labels")
    movie = _ome_zarr(tmp_path / "movie.zarr", np.zeros((3, 1, 2, 64, 64), np.uint8), "tczyx")
    results = tmp_path / "results"
    results.mkdir()
    cases = [
        (tmp_path / "project.zarr", "holds no image array (found groups labels, raw)"),
        (movie, "axes t=3, c=1, z=2, y=64, x=64: 3 time points"),
    ]

    for images, words in cases:
        code = main(
            _predict(images, results / "mask.zarr", "--probabilities", str(results / "p.zarr"))
        )
        err = capsys.readouterr().err

        assert code == 2, err
        message = [line for line in err.splitlines() if line.startswith("dlbio: error:")]
        assert len(message) == 1, err
        assert words in message[0]
        assert "Traceback" not in err
    assert list(results.iterdir()) == []


def test_an_output_that_is_the_input_is_refused(inputs, capsys) -> None:
    store = inputs["zarr"]

    assert main(_predict(store, store, "--overwrite")) == 2

    assert "is one of the --images" in capsys.readouterr().err
    assert open_zarr_image(store).levels[0].shape == (3, 256, 256)
