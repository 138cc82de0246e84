"""Shared fixtures: where the real public data lives, and a skip when it is absent."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import tifffile

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DLBIO_DATA", REPO_ROOT.parent / "shared" / "data"))


def _require(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data {path} is absent (set DLBIO_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    """``shared/data/isbi2012``: train-volume.tif, train-labels.tif, test-volume.tif."""
    return _require("isbi2012")


@pytest.fixture(scope="session")
def structures_dir() -> Path:
    """``shared/data/isbi2012_structures``: membranes, mitochondria, synapses."""
    return _require("isbi2012_structures")


@pytest.fixture(scope="session")
def plantvillage_dir() -> Path:
    """``shared/data/plantvillage``: 15 class folders of 60 leaf photos."""
    return _require("plantvillage")


#: `dlbio train --config` settings that train in seconds: what the CLI tests use.
TINY_TRAINING = {
    "network": {"depth": 2, "base_filters": 4},
    "patch_size": 64,
    "batch_size": 2,
    "epochs": 2,
    "steps_per_epoch": 2,
    "validation_fraction": 0.2,
    "tile_size": 64,
    "tile_overlap": 8,
}


@pytest.fixture(scope="session")
def isbi_crops(isbi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ISBI slices 0-4 (train) and 25-29 (test), 96 x 128 pixels, as TIFF stacks and a
    folder of PNG slices, with ``config``: :data:`TINY_TRAINING` as a JSON file."""
    import imageio.v3 as iio

    folder = tmp_path_factory.mktemp("crops")
    volume = tifffile.imread(isbi_dir / "train-volume.tif")[:, :96, :128]
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[:, :96, :128]
    paths = {}
    for name, data in {
        "train": volume[:5],
        "train_labels": labels[:5],
        "test": volume[25:],
        "test_labels": labels[25:],
    }.items():
        paths[name] = folder / f"{name}.tif"
        tifffile.imwrite(paths[name], data, photometric="minisblack")
    slices = folder / "test_slices"
    slices.mkdir()
    for z, plane in enumerate(volume[25:]):
        iio.imwrite(slices / f"{z}.png", plane)
    paths["test_slices"] = slices
    paths["config"] = folder / "tiny.json"
    paths["config"].write_text(json.dumps(TINY_TRAINING))
    return paths


@pytest.fixture
def tiny_training() -> dict:
    """A copy of :data:`TINY_TRAINING` to compare with or change."""
    return copy.deepcopy(TINY_TRAINING)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that opens a napari viewer as ``gui``.

    napari's process never imports TensorFlow (the engine process does): the widget tests
    check that in a process of their own, not after whatever other test modules loaded
    (TensorFlow after Mesa's OpenGL crashed a shared process).  They live in
    tests/widgets, which scripts/run-tests.sh runs as a process of its own; this marker
    lets a developer select them (``-m gui``) and the check below keeps them there.
    """
    for item in items:
        if "make_napari_viewer" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gui)
        if item.get_closest_marker("gui") and "widgets" not in item.path.parts:
            raise pytest.UsageError(
                f"{item.nodeid} opens a napari viewer: move it under tests/widgets, which runs "
                "in its own process (TensorFlow must not be loaded before the viewer)."
            )
