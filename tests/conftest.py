"""Shared fixtures: where the real public data lives, and a skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
