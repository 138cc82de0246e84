"""A stack saved as the planar colour samples of one image: napari and ``dlbio`` say so.

Labels are read as slices (they are never colour), with a notice; images stay one colour
image, and when their labels then do not fit, the error says how to save them as slices.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_dlbio._reader import read_stack_layer
from napari_dlbio.cli import main

ISBI = "255=background,0=membrane"
TINY_UNET = {
    "network": {"depth": 2, "base_filters": 4},
    "patch_size": 32,
    "batch_size": 2,
    "epochs": 1,
    "steps_per_epoch": 1,
    "validation_fraction": 0.0,
    "tile_size": 32,
    "tile_overlap": 8,
}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
    labels = np.where(volume > 100, 255, 0).astype(np.uint8)
    paths = {
        "images": tmp_path / "em stack.tif",
        "planar images": tmp_path / "em planar.tif",
        "planar labels": tmp_path / "labels planar.tif",
        "config": tmp_path / "tiny.json",
        "model": tmp_path / "model",
    }
    tifffile.imwrite(paths["images"], volume, photometric="minisblack")
    # What tifffile.imwrite(path, stack) does by default with 3 planes.
    for name, data in (("planar images", volume), ("planar labels", labels)):
        tifffile.imwrite(paths[name], data, photometric="rgb", planarconfig="separate")
    paths["config"].write_text(json.dumps(TINY_UNET))
    return paths


def _train(files: dict[str, Path], images: str, labels: str) -> list[str]:
    return [
        "train",
        "--images",
        str(files[images]),
        "--labels",
        str(files[labels]),
        "--label-values",
        ISBI,
        "--config",
        str(files["config"]),
        "--out",
        str(files["model"]),
        "--quiet",
    ]


def test_napari_warns_that_the_planes_open_as_one_colour_image(files: dict[str, Path]) -> None:
    with pytest.warns(UserWarning, match="stores its 3 planes as the colour samples"):
        ((data, kwargs, layer_type),) = read_stack_layer(str(files["planar images"]))

    assert layer_type == "image"
    assert kwargs["rgb"] is True
    assert data.shape == (1, 64, 64, 3)


def test_training_reads_planar_labels_as_slices_and_says_so(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(_train(files, "images", "planar labels"))

    err = capsys.readouterr().err
    assert code == 0, err
    assert "labels are never colour, so they are read as 3 slices" in err
    assert "photometric='minisblack'" in err
    assert (files["model"] / "config.json").is_file()

    code = main(
        [
            "evaluate",
            "--model",
            str(files["model"]),
            "--images",
            str(files["images"]),
            "--labels",
            str(files["planar labels"]),
            "--label-values",
            ISBI,
            "--json",
        ]
    )

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "read as 3 slices" in captured.err
    assert "pixel_accuracy" in json.loads(captured.out)


def test_planar_images_whose_labels_are_slices_are_refused_with_the_fix(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(_train(files, "planar images", "planar labels"))

    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    (message,) = [line for line in err.splitlines() if line.startswith("dlbio: error:")]
    assert "The labels have shape (3, 64, 64) but the images have shape (1, 64, 64, 3)" in message
    assert "em planar.tif stores its 3 planes as the colour samples of one image" in message
    assert "save them as 3 slices instead" in message
    assert "photometric='minisblack'" in message
    assert not files["model"].exists()
