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
